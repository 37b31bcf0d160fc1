"""Run a synthesized state machine in LocalStack's Step Functions interpreter, as moto ships it.

What runs is the definition from the template, created and executed by moto (LocalStack's ASL
grammar, interpreter, Choice rules, Retry/Catch, variables, and its rule that a JSONata field
evaluating to nothing fails with ``States.QueryEvaluationError``). Every state machine of the stack is
created, so one test can run the training pipeline and then the approval recorder on the same moto
account. The AWS SDK integrations (S3 ListObjectsV2 and PutObject, SSM PutParameter, the SageMaker model
registry's CreateModelPackage and ListModelPackages) reach moto's own services.

LocalStack's AWS SDK integration calls moto through a boto3 client made with ``parameter_validation=False``,
so nothing would check those requests against the service's API. Each one is checked here first, as
SageMaker's job requests are (below): botocore's validator and the model's enums, lengths and patterns. A
request that breaks the model is recorded and refused with a ``ValidationException``.

Four seams are filled here, each where moto has nothing to run:

- JSONata. LocalStack evaluates JSONata in a JVM with jars from Maven Central, which this machine
  cannot reach; ``jsonata-python`` (a port of the jsonata-java reference) evaluates the very
  expressions LocalStack composes, at the one function LocalStack calls for it.
- ``$hash``. Step Functions documents ``$hash(value, algorithm)``; LocalStack stubs it with a
  constant string. The documented function (MD5, SHA-1, SHA-256, SHA-384, SHA-512; hex) stands in.
- SageMaker's optimized ``.sync`` integrations (training and tuning jobs), which moto lacks:
  ``FakeSageMaker`` validates every request against botocore's SageMaker service model (types and
  required members by botocore's validator; enums, lengths and patterns from the same model), then
  answers with a described job whose end the test scripts. Failures take the shapes Step Functions
  gives them: ``States.TaskFailed`` with the job's description as the cause for a job that ran and
  failed; ``SageMaker.<Exception>`` for a request SageMaker refused.
- The clock of Retry intervals: the intervals are recorded, not slept.

Two LocalStack defects in string handling, which cancel out only for strings without quotes or
backslashes, are corrected to what Step Functions does: it reads a string literal nested in an
``Assign`` object without JSON's unescaping (its Arguments path unescapes), and it writes a string
variable into a JSONata declaration between quotes without escaping it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import boto3
import botocore.session
import jsonata
import regex
from botocore.exceptions import ClientError
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.validate import ParamValidator
from moto import mock_aws
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.antlt4utils.antlr4utils import from_string_literal
from moto.stepfunctions.parser.asl.component.common.assign.assign_template_value_terminal import (
    AssignTemplateValueTerminalLit,
)
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.intrinsic import jsonata as localstack_functions
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.eval import states as localstack_states
from moto.stepfunctions.parser.asl.eval import variable_store as localstack_variables
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.jsonata import jsonata as localstack_jsonata
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
from moto.stepfunctions.parser.backend import execution_worker

from tests.cfn_values import Deployment

# --- JSONata -----------------------------------------------------------------------------------------

_HASH_ALGORITHMS = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def _hash(value: object, algorithm: object) -> str:
    if not isinstance(value, str) or algorithm not in _HASH_ALGORITHMS:
        raise localstack_jsonata.JSONataException(
            "States.QueryEvaluationError", f"$hash takes a string and one of {', '.join(_HASH_ALGORITHMS)}"
        )
    return hashlib.new(_HASH_ALGORITHMS[str(algorithm)], value.encode()).hexdigest()


def evaluate_jsonata(expression: str) -> Any:
    """What LocalStack's JVM bridge does: evaluate with no input, errors as its JSONataException."""
    try:
        compiled = jsonata.Jsonata(expression)
        compiled.register_lambda("hash", _hash)
        return compiled.evaluate(None)
    except localstack_jsonata.JSONataException:
        raise
    except Exception as err:
        raise localstack_jsonata.JSONataException("UNKNOWN", str(err)) from err


# --- SageMaker's .sync integrations -------------------------------------------------------------------


@dataclass
class JobOutcome:
    """How one SageMaker job ends. ``refuse`` is an error code SageMaker answers the create request with."""

    status: str = "Completed"
    failure_reason: str | None = None
    metrics: dict[str, float] | None = None
    tuned: dict[str, str] | None = None
    refuse: str | None = None


_MODELED_ERRORS = {"ResourceInUse", "ResourceLimitExceeded", "ResourceNotFound"}


def _client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "test"}},
        operation,
    )


_SESSION = botocore.session.get_session()


def service_model_problems(service: str, operation: str, params: dict, *, output: bool = False) -> list[str]:
    """What breaks botocore's model of ``service``: its validator (types, required members, minimums), then
    the enums, maximum lengths and patterns the validator leaves out."""
    op = _SESSION.get_service_model(service).operation_model(operation)
    shape = op.output_shape if output else op.input_shape
    report = ParamValidator().validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _constraint_problems(params, shape, operation)
    return problems


class FakeSageMaker:
    """Training and tuning jobs of one account: requests validated by botocore's model, outcomes scripted."""

    def __init__(self, account: str, region: str) -> None:
        self.account, self.region = account, region
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict]] = []
        self.invalid: list[str] = []
        self.training_outcomes: list[JobOutcome] = []
        self.tuning_outcomes: list[JobOutcome] = []

    # the service model ----------------------------------------------------------------------------

    def check(self, operation: str, params: dict, *, output: bool = False) -> list[str]:
        return service_model_problems("sagemaker", operation, params, output=output)

    # create and describe --------------------------------------------------------------------------

    def create(self, action: str, params: dict) -> dict:
        operation = action[0].upper() + action[1:]
        self.requests.append((operation, copy.deepcopy(params)))
        problems = self.check(operation, params)
        if problems:
            self.invalid.extend(problems)
            raise _client_error("ValidationException", "; ".join(problems), operation)
        if operation == "CreateTrainingJob":
            return self._create_training_job(params)
        if operation == "CreateHyperParameterTuningJob":
            return self._create_tuning_job(params)
        raise AssertionError(f"the pipeline called {operation}, which FakeSageMaker does not run")

    def _start(self, kind: str, name: str, outcomes: list[JobOutcome], operation: str) -> JobOutcome:
        outcome = outcomes.pop(0) if outcomes else JobOutcome()
        if outcome.refuse:
            raise _client_error(outcome.refuse, f"SageMaker refused {name}: {outcome.refuse}", operation)
        if name in self.jobs:
            raise _client_error(
                "ResourceInUse",
                f"{kind} names must be unique within an AWS account and region, and a {kind.lower()} with this "
                f"name already exists ({self.jobs[name]['arn']})",
                operation,
            )
        return outcome

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def _create_training_job(self, params: dict) -> dict:
        name = params["TrainingJobName"]
        output_path = params["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        outcome = self._start("Training job", name, self.training_outcomes, "CreateTrainingJob")
        arn = self._arn("training-job", name)
        metrics = {"valid_loss": 0.52, "test_accuracy": 0.81} if outcome.metrics is None else outcome.metrics
        now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
        described = {
            "TrainingJobName": name,
            "TrainingJobArn": arn,
            "ModelArtifacts": {"S3ModelArtifacts": f"{output_path}/{name}/output/model.tar.gz"},
            "TrainingJobStatus": outcome.status,
            "SecondaryStatus": outcome.status,
            **({"FailureReason": outcome.failure_reason} if outcome.failure_reason else {}),
            "HyperParameters": params.get("HyperParameters", {}),
            "AlgorithmSpecification": params["AlgorithmSpecification"],
            "RoleArn": params["RoleArn"],
            "InputDataConfig": params.get("InputDataConfig", []),
            "OutputDataConfig": params["OutputDataConfig"],
            "ResourceConfig": params["ResourceConfig"],
            "VpcConfig": params.get("VpcConfig"),
            "StoppingCondition": params["StoppingCondition"],
            "CreationTime": now,
            "TrainingEndTime": now + dt.timedelta(hours=1),
            "EnableManagedSpotTraining": params.get("EnableManagedSpotTraining", False),
            **({"CheckpointConfig": params["CheckpointConfig"]} if "CheckpointConfig" in params else {}),
            **(
                {"FinalMetricDataList": [{"MetricName": k, "Value": v, "Timestamp": now} for k, v in metrics.items()]}
                if metrics
                else {}
            ),
        }
        self._remember(name, arn, "DescribeTrainingJob", described)
        return {"TrainingJobArn": arn}

    def _create_tuning_job(self, params: dict) -> dict:
        name = params["HyperParameterTuningJobName"]
        outcome = self._start("Hyperparameter tuning job", name, self.tuning_outcomes, "CreateHyperParameterTuningJob")
        arn = self._arn("hyper-parameter-tuning-job", name)
        config = params["HyperParameterTuningJobConfig"]
        tuned = outcome.tuned if outcome.tuned is not None else _middle_of_ranges(config["ParameterRanges"])
        _assert_within_ranges(tuned, config["ParameterRanges"])
        now = dt.datetime(2026, 12, 1, 11, 0, tzinfo=dt.UTC)
        best = {
            "TrainingJobName": f"{name}-001-0a1b2c3d",
            "TrainingJobArn": self._arn("training-job", f"{name}-001-0a1b2c3d"),
            "CreationTime": now,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": tuned,
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "MetricName": config["HyperParameterTuningJobObjective"]["MetricName"],
                "Value": 0.61,
            },
        }
        described = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": arn,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": params["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": outcome.status,
            **({"FailureReason": outcome.failure_reason} if outcome.failure_reason else {}),
            "CreationTime": now,
            "TrainingJobStatusCounters": {"Completed": config["ResourceLimits"]["MaxNumberOfTrainingJobs"]},
            "ObjectiveStatusCounters": {"Succeeded": config["ResourceLimits"]["MaxNumberOfTrainingJobs"]},
            **({"BestTrainingJob": best} if outcome.status == "Completed" else {}),
        }
        self._remember(name, arn, "DescribeHyperParameterTuningJob", described)
        return {"HyperParameterTuningJobArn": arn}

    def _remember(self, name: str, arn: str, describe: str, described: dict) -> None:
        described = {k: v for k, v in described.items() if v is not None}
        problems = self.check(describe, described, output=True)
        assert not problems, f"FakeSageMaker's own {describe} answer breaks the service model: {problems}"
        self.jobs[name] = {"arn": arn, "described": _json_ready(described)}

    def described(self, name: str) -> dict:
        return copy.deepcopy(self.jobs[name]["described"])


def _middle_of_ranges(ranges: dict) -> dict[str, str]:
    tuned = {}
    for r in ranges.get("ContinuousParameterRanges", []):
        tuned[r["Name"]] = f"{(float(r['MinValue']) * float(r['MaxValue'])) ** 0.5:.6g}"
    for r in ranges.get("CategoricalParameterRanges", []):
        tuned[r["Name"]] = r["Values"][len(r["Values"]) // 2]
    return tuned


def _assert_within_ranges(tuned: dict[str, str], ranges: dict) -> None:
    for r in ranges.get("ContinuousParameterRanges", []):
        assert float(r["MinValue"]) <= float(tuned[r["Name"]]) <= float(r["MaxValue"]), (r, tuned)
    for r in ranges.get("CategoricalParameterRanges", []):
        assert tuned[r["Name"]] in r["Values"], (r, tuned)


def _json_ready(value: Any) -> Any:
    """Timestamps as Step Functions passes them on: epoch milliseconds."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _constraint_problems(value: Any, shape: Shape, path: str) -> list[str]:
    """The model's constraints botocore's validator leaves out: enums, maximum lengths and patterns."""
    problems: list[str] = []
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                problems += _constraint_problems(value[key], member, f"{path}.{key}")
    elif isinstance(shape, ListShape) and isinstance(value, list):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            problems.append(f"{path} has {len(value)} items; at most {shape.metadata['max']}")
        for i, item in enumerate(value):
            problems += _constraint_problems(item, shape.member, f"{path}[{i}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            problems.append(f"{path} has {len(value)} entries; at most {shape.metadata['max']}")
        for k, v in value.items():
            problems += _constraint_problems(k, shape.key, f"{path} key")
            problems += _constraint_problems(v, shape.value, f"{path}[{k}]")
    elif shape.type_name == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}={value!r} is not one of the model's {len(shape.enum)} values")
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            problems.append(f"{path}={value!r} is longer than {shape.metadata['max']}")
        pattern = shape.metadata.get("pattern")
        # The model's patterns are Java regular expressions (\p{L} and the like): the regex module reads them.
        if pattern and not regex.fullmatch(pattern, value, flags=regex.DOTALL):
            problems.append(f"{path}={value!r} does not match {pattern}")
    elif shape.type_name in ("integer", "long") and isinstance(value, int):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            problems.append(f"{path}={value} is outside [{low}, {high}]")
    return problems


_ACTIVE: FakeSageMaker | None = None
_SYNC_ACTIONS = {"createTrainingJob", "createHyperParameterTuningJob"}


class _SageMakerSync(StateTaskServiceCallback):
    """``arn:aws:states:::sagemaker:<create job>.sync`` answered by the active FakeSageMaker."""

    def __init__(self) -> None:
        # LocalStack's .sync path also sets up the task-token endpoint, as its Batch and Glue integrations do.
        super().__init__(supported_integration_patterns={ResourceCondition.Sync, ResourceCondition.WaitForTaskToken})

    def _validate_service_integration_is_supported(self) -> None:
        # Checked when the state machine is created, as Step Functions does; what is not run here fails loudly.
        if self.resource.api_action not in _SYNC_ACTIONS or self.resource.condition != ResourceCondition.Sync:
            raise ValueError(f"{self.resource.resource_arn}: FakeSageMaker runs only {sorted(_SYNC_ACTIONS)} .sync")

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials) -> None:
        assert _ACTIVE is not None
        env.stack.append(_ACTIVE.create(self.resource.api_action, normalised_parameters))

    def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        env.stack.pop()
        name = normalised_parameters.get("TrainingJobName") or normalised_parameters["HyperParameterTuningJobName"]

        def resolve() -> dict:
            assert _ACTIVE is not None
            described = _ACTIVE.described(name)
            status = described.get("TrainingJobStatus") or described.get("HyperParameterTuningJobStatus")
            if status == "Completed":
                return described
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(
                        taskFailedEventDetails=TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=to_json_str(described),
                        )
                    ),
                )
            )

        return resolve

    def _from_error(self, env, ex: Exception) -> FailureEvent:
        if not isinstance(ex, ClientError):
            return super()._from_error(env, ex)
        code, message = ex.response["Error"]["Code"], ex.response["Error"]["Message"]
        name = f"SageMaker.{code}Exception" if code in _MODELED_ERRORS else "SageMaker.AmazonSageMakerException"
        cause = f"{message} (Service: AmazonSageMaker; Status Code: 400; Error Code: {code}; Request ID: test)"
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(name),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=name,
                    cause=cause,
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )


@dataclass
class SdkCalls:
    """Every AWS SDK integration request of the active executions, and the ones that broke the API's model."""

    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def of(self, service: str, operation: str) -> list[dict]:
        return [params for s, o, params in self.requests if (s, o) == (service, operation)]


_SDK_CALLS: SdkCalls | None = None


class _ValidatedAwsSdk(StateTaskServiceAwsSdk):
    """``arn:aws:states:::aws-sdk:<service>:<action>``: the request checked against botocore's model of the
    service before LocalStack's own integration sends it to moto."""

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials) -> None:
        assert _SDK_CALLS is not None
        service = self._get_boto_service_name()
        operation = _SESSION.get_service_model(service).operation_model(
            self.resource.api_action[0].upper() + self.resource.api_action[1:]
        )
        _SDK_CALLS.requests.append((service, operation.name, copy.deepcopy(normalised_parameters)))
        problems = service_model_problems(service, operation.name, normalised_parameters)
        if problems:
            _SDK_CALLS.invalid.extend(problems)
            raise _client_error("ValidationException", "; ".join(problems), operation.name)
        super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)


_original_service_for = state_task_factory.state_task_service_for


def _service_for(service_name: str):
    if service_name == "sagemaker":
        return _SageMakerSync()
    if service_name == "aws-sdk":
        return _ValidatedAwsSdk()
    return _original_service_for(service_name=service_name)


# --- executions --------------------------------------------------------------------------------------


@dataclass
class Execution:
    """One finished execution, read from its history."""

    arn: str
    status: str
    error: str | None
    cause: str | None
    output: Any
    states: list[str]
    calls: list[tuple[str, str, dict]]
    events: list[dict] = field(repr=False)

    def calls_of(self, state: str) -> list[dict]:
        return [params for name, _, params in self.calls if name == state]

    def call(self, state: str) -> dict:
        """The arguments of ``state``'s task (its last attempt)."""
        found = self.calls_of(state)
        assert found, f"{state} ran no task; states entered: {self.states}"
        return found[-1]


class _Redrives:
    """Executions to start as the redrive of an earlier one: same execution ID and name, RedriveCount 1."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, str]] = {}

    def environment(self, original: Callable) -> Callable:
        def patched(worker):
            env = original(worker)
            execution = env.states.context_object.context_object_data["Execution"]
            if execution["Name"] in self.pending:
                execution["Id"], execution["Name"] = self.pending.pop(execution["Name"])
                execution["RedriveCount"] = 1
            return env

        return patched


@dataclass(frozen=True)
class _Machine:
    name: str
    kind: str
    definition_text: str
    role_arn: str


def _machines(deployment: Deployment, stack: str) -> dict[str, _Machine]:
    """Every state machine of the stack, by name, with its definition and role as deployed."""
    found = {}
    for logical_id, resource in deployment.templates[stack]["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        props = resource["Properties"]
        name = props.get("StateMachineName", logical_id)
        found[name] = _Machine(
            name=name,
            kind=props.get("StateMachineType", "STANDARD"),
            definition_text=deployment.resolve(stack, props["DefinitionString"]),
            role_arn=deployment.resolve(stack, props["RoleArn"]),
        )
    return found


class LocalPipeline:
    """A deployment's state machines, created in moto and run by LocalStack's interpreter.

    ``name`` picks the one ``run`` starts unless told otherwise (needed when the stack has several).
    """

    def __init__(self, deployment: Deployment, stack: str, name: str | None = None) -> None:
        self.deployment = deployment
        self.stack = stack
        self.machines = _machines(deployment, stack)
        if name is None:
            ((name, _),) = self.machines.items()
        self.name: str = name
        self.definition_text: str = self.machines[name].definition_text
        self.role_arn: str = self.machines[name].role_arn
        self.sagemaker = FakeSageMaker(deployment.account, deployment.region)
        self.sdk = SdkCalls()
        self.retry_intervals: list[float] = []
        self._redrives = _Redrives()
        self._stack = contextlib.ExitStack()
        self._count = 0

    @property
    def definition(self) -> dict:
        return json.loads(self.definition_text)

    @property
    def invalid(self) -> list[str]:
        """Every request, of a job or of an SDK integration, that broke the service's model."""
        return self.sagemaker.invalid + self.sdk.invalid

    def client(self, service: str):
        return boto3.client(service, region_name=self.deployment.region)

    def __enter__(self) -> LocalPipeline:
        global _ACTIVE, _SDK_CALLS
        s = self._stack
        # moto answers as the deployment's account, so the ARNs it makes are the ones the templates' IAM names.
        credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "x"}
        s.enter_context(mock.patch.dict("os.environ", {**credentials, "MOTO_ACCOUNT_ID": self.deployment.account}))
        s.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        s.enter_context(mock.patch.object(localstack_jsonata, "_eval_jsonata", evaluate_jsonata))
        declarations = s.enter_context(mock.patch.dict(localstack_functions._DECLARATION_BY_VARIABLE_REFERENCE))
        del declarations["$hash"]
        s.enter_context(mock.patch.object(state_task_factory, "state_task_service_for", _service_for))
        s.enter_context(mock.patch.object(retrier_decl, "time", _RecordingClock(self.retry_intervals)))
        s.enter_context(
            mock.patch.object(
                Preprocessor, "visitAssign_template_value_terminal_string_literal", _assign_string_literal
            )
        )
        for module in (localstack_states, localstack_variables):
            s.enter_context(mock.patch.object(module, "encode_jsonata_variable_declarations", _declarations))
        original = execution_worker.ExecutionWorker._get_evaluation_environment
        s.enter_context(
            mock.patch.object(
                execution_worker.ExecutionWorker, "_get_evaluation_environment", self._redrives.environment(original)
            )
        )
        # LocalStack logs every failure with the whole evaluation tree; the execution's history says the same.
        logger = logging.getLogger("moto.stepfunctions.parser")
        s.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.CRITICAL)
        _ACTIVE, _SDK_CALLS = self.sagemaker, self.sdk
        s.callback(_deactivate)
        sfn = self.client("stepfunctions")
        self.machine_arns = {
            m.name: sfn.create_state_machine(
                name=m.name, definition=m.definition_text, roleArn=m.role_arn, type=m.kind
            )["stateMachineArn"]
            for m in self.machines.values()
        }
        self.machine_arn = self.machine_arns[self.name]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(
        self,
        execution_input: Any,
        *,
        redrive_of: Execution | None = None,
        timeout: float = 60,
        machine: str | None = None,
    ) -> Execution:
        """Start an execution of ``machine`` (the chosen one by default) and wait for its end."""
        self._count += 1
        name = f"run-{self._count}"
        if redrive_of is not None:
            original_name = redrive_of.arn.rsplit(":", 1)[1]
            self._redrives.pending[name] = (redrive_of.arn, original_name)
        sfn = self.client("stepfunctions")
        machine_arn = self.machine_arns[machine or self.name]
        arn = sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(execution_input))[
            "executionArn"
        ]
        deadline = time.monotonic() + timeout
        while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"execution {name} still running after {timeout} s"
            time.sleep(0.02)
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return _read(arn, described, events)


def _assign_string_literal(self, ctx) -> AssignTemplateValueTerminalLit:
    """A string nested in Assign, read as JSON (LocalStack's own version keeps the escapes)."""
    return AssignTemplateValueTerminalLit(value=from_string_literal(ctx.string_literal()))


def _declarations(bindings: dict[str, Any]) -> str:
    """JSONata declarations of the variables, each value written as JSON (strings escaped)."""
    return "".join(f"{name}:={to_json_str(value, separators=(',', ':'))};" for name, value in bindings.items())


class _RecordingClock:
    def __init__(self, intervals: list[float]) -> None:
        self.intervals = intervals

    def sleep(self, seconds: float) -> None:
        self.intervals.append(seconds)


def _deactivate() -> None:
    global _ACTIVE, _SDK_CALLS
    _ACTIVE = _SDK_CALLS = None


def _read(arn: str, described: dict, events: list[dict]) -> Execution:
    states: list[str] = []
    calls: list[tuple[str, str, dict]] = []
    error = cause = None
    for event in events:
        if "stateEnteredEventDetails" in event:
            states.append(event["stateEnteredEventDetails"]["name"])
        if "taskScheduledEventDetails" in event:
            details = event["taskScheduledEventDetails"]
            calls.append(
                (states[-1], f"{details['resourceType']}:{details['resource']}", json.loads(details["parameters"]))
            )
        if "executionFailedEventDetails" in event:
            error = event["executionFailedEventDetails"].get("error")
            cause = event["executionFailedEventDetails"].get("cause")
    output = json.loads(described["output"]) if described.get("output") else None
    return Execution(
        arn=arn,
        status=described["status"],
        error=error,
        cause=cause,
        output=output,
        states=states,
        calls=calls,
        events=events,
    )


@contextlib.contextmanager
def local_pipeline(deployment: Deployment, stack: str, name: str | None = None) -> Iterator[LocalPipeline]:
    with LocalPipeline(deployment, stack, name) as pipeline:
        yield pipeline
