"""The training pipeline's Amazon States Language definition (JSONata), as plain data.

One ``StartExecution`` runs: check the input → check the data set and the pretrained weights in S3
→ optional hyperparameter tuning (``createHyperParameterTuningJob.sync``; when only the head trains, after a
training job that stores the backbone's features once for every trial) → the final training job
(``createTrainingJob.sync``, N instances, torchrun on every host) → the quality gate on
``test_accuracy`` → the model's metrics written to S3 → the model registered as a version of the
model package group (SageMaker Model Registry): Approved or PendingManualApproval (setting
model_approval) when it passed the gate, Rejected (with its metrics, so the history is complete)
when it did not, after which the execution fails with ``QualityGateFailed``.

The definition is built here from plain values (strings may be CDK tokens) so that the stack
synthesizes it into the template and the tests can read it back and run it.

Execution input (every field optional)::

    {"tune": true, "instance_count": 2, "instance_type": "ml.g4dn.xlarge", "epochs": 10,
     "use_spot": false, "hyperparameters": {"learning_rate": 0.01, "batch_size": 64, "backbone": "resnet50"}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dogbreeds_stacks.contract import FEATURE_EXTRACTION_STATE, training_hyperparameters
from dogbreeds_stacks.instances import LOCAL_STORAGE_PATTERN
from dogbreeds_stacks.settings import Settings, instance_types

# What the execution input may carry; anything else is refused before a job starts.
INPUT_FIELDS = ("tune", "instance_count", "instance_type", "epochs", "use_spot", "hyperparameters")
TRAIN = training_hyperparameters()
HYPERPARAMETERS = TRAIN.PIPELINE_HYPERPARAMETERS
MAX_INSTANCE_COUNT = 20
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Job names: <prefix (12)>-hpo-<run ID>-<attempt ID> must fit the tuning job name limit of 32 characters.
RUN_ID_LENGTH = 8
ATTEMPT_ID_LENGTH = 6
# CreateModelPackage's ClientToken: at most 36 characters.
CLIENT_TOKEN_LENGTH = 36

TRAINING_JOB_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"
TUNING_JOB_SYNC = "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
S3_LIST_OBJECTS = "arn:aws:states:::aws-sdk:s3:listObjectsV2"
S3_PUT_OBJECT = "arn:aws:states:::aws-sdk:s3:putObject"
CREATE_MODEL_PACKAGE = "arn:aws:states:::aws-sdk:sagemaker:createModelPackage"
# How a model that passed the quality gate is registered, by the setting model_approval.
APPROVAL_STATUS = {"auto": "Approved", "manual": "PendingManualApproval"}
# What the serving container accepts and answers (training/inference.py's input_fn and output_fn).
SERVING_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/json")
SERVING_RESPONSE_TYPES = ("application/json",)
# The model's metrics object, next to its training job's output under the models prefix.
MODEL_QUALITY_FILE = "model-quality.json"


@dataclass(frozen=True)
class PipelineResources:
    """The deployed things the definition refers to (values may be CDK tokens)."""

    bucket_name: str
    dataset_prefix: str
    pretrained_prefix: str
    models_prefix: str
    checkpoints_prefix: str
    features_prefix: str
    role_arn: str
    training_image: str
    tuning_image: str
    code_uri: str
    region: str
    key_arn: str
    subnet_ids: list[str]
    security_group_ids: list[str]
    job_name_prefix: str
    model_package_group: str
    inference_image: str
    model_environment: dict[str, str]
    inference_instance_types: list[str]
    metric_definitions: list[dict[str, str]]
    tuning_objective: str
    quality_gate_metric: str


def training_instance_types() -> tuple[str, ...]:
    """What CreateTrainingJob accepts as an instance type, from botocore's SageMaker service model."""
    return instance_types("training_instance_type")


def _js(value: object) -> str:
    """A value as a JSONata literal (JSON is valid JSONata)."""
    return json.dumps(value)


def _sdk_encoded(values: dict[str, object]) -> dict[str, str]:
    """Hyperparameter values JSON-encoded, as the SageMaker Python SDK sends them."""
    return {k: json.dumps(v) for k, v in values.items()}


def definition(settings: Settings, r: PipelineResources) -> dict:
    """The whole state machine: one builder per group of states, in the order an execution meets them."""
    states = {
        **_input_states(settings, r),
        **_data_set_states(),
        **_tuning_states(settings, r),
        **_training_states(settings, r),
        **_quality_gate_states(r),
        **_registry_states(settings, r),
    }
    return {
        "Comment": "Dog-breed classifier: tune (optional), train with DDP, gate on test accuracy, register the model",
        "QueryLanguage": "JSONata",
        "StartAt": "Configure",
        "States": states,
    }


def _channel(name: str, uri: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
        "InputMode": "File",
    }


def _config(s: Settings, r: PipelineResources) -> dict:
    """Deploy-time constants every later state reads as ``$config``."""
    defaults = {
        "tune": s.tuning_enabled,
        "instance_count": s.training_instance_count,
        "instance_type": s.training_instance_type,
        "epochs": s.training_epochs,
        "use_spot": s.training_use_spot,
        "hyperparameters": {
            "learning_rate": s.training_learning_rate,
            "batch_size": s.training_batch_size,
            "backbone": s.training_backbone,
            "trainable": s.training_trainable,
            "patience": s.training_patience,
            # The final job also writes the int8 model that an int8 endpoint serves.
            **({"quantize": "int8"} if s.inference_precision == "int8" else {}),
        },
    }
    # The toolkit reads these; sagemaker_* values never reach train.py's command line.
    sagemaker_parameters = _sdk_encoded(
        {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": r.code_uri,
            "sagemaker_region": r.region,
            "sagemaker_container_log_level": 20,
        }
    )
    return {
        "bucket": r.bucket_name,
        "datasetPrefix": r.dataset_prefix,
        "pretrainedPrefix": r.pretrained_prefix,
        "checkpointsPrefix": r.checkpoints_prefix,
        # The shared feature store of head-only runs (train.py --feature-store): one extraction for all trials.
        "featureStore": f"s3://{r.bucket_name}/{r.features_prefix}",
        "defaults": defaults,
        "jobNamePrefix": r.job_name_prefix,
        "sagemakerParameters": sagemaker_parameters,
        "tuningEpochs": s.tuning_epochs,
        "channel": _channel("training", f"s3://{r.bucket_name}/{r.dataset_prefix}"),
        "pretrainedChannel": _channel("pretrained", f"s3://{r.bucket_name}/{r.pretrained_prefix}"),
        "qualityGate": s.quality_gate_min_test_accuracy,
        "modelsPrefix": r.models_prefix,
        "datasetUri": f"s3://{r.bucket_name}/{r.dataset_prefix}",
        "codeUri": r.code_uri,
        "approvalStatus": APPROVAL_STATUS[s.model_approval],
    }


def _input_states(s: Settings, r: PipelineResources) -> dict:
    """Configure, check the execution input, and resolve the run's effective values."""
    return {
        "Configure": {
            "Type": "Pass",
            "Comment": "Deploy-time constants, then the input checks.",
            # Every variable a later state reads is assigned here first, so none is ever undefined. (A plain
            # null would vanish from the synthesized JSON; the expression keeps it.)
            "Assign": {"config": _config(s, r), "tuned": {}, "tuningJob": "{% null %}"},
            "Next": "Check input",
        },
        "Check input": {
            "Type": "Pass",
            "Assign": {"problems": "{% " + _input_problems_expression() + " %}"},
            "Next": "Input valid?",
        },
        "Input valid?": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $count($problems) > 0 %}", "Next": "Bad input"}],
            "Default": "Resolve run",
        },
        "Bad input": {
            "Type": "Fail",
            "Error": "InvalidInput",
            "Cause": "{% 'The execution input was refused: ' & $join($problems, ' ') %}",
        },
        "Resolve run": {
            "Type": "Pass",
            "Comment": "Defaults from the settings, overridden by the input; the run's ID from the execution.",
            "Assign": {"run": "{% " + _run_expression() + " %}"},
            "Next": "List data set",
        },
    }


def _data_set_states() -> dict:
    """The data set's three splits must be in S3; the pretrained channel is added when its weights are."""
    return {
        "List data set": {
            "Type": "Task",
            "Resource": S3_LIST_OBJECTS,
            "Arguments": {
                "Bucket": "{% $config.bucket %}",
                "Prefix": "{% $config.datasetPrefix %}",
                "Delimiter": "/",
            },
            # The array constructor keeps the result an array: $filter gives undefined for no match
            # and a bare string for one, and Step Functions fails a field that evaluates to undefined.
            "Assign": {
                "missingSplits": (
                    "{% ( $found := $states.result.CommonPrefixes.Prefix; "
                    "[$filter(['train/', 'valid/', 'test/'], function($s) "
                    "{ $not(($config.datasetPrefix & $s) in $found) })] ) %}"
                )
            },
            "Retry": _sdk_retry(),
            "Next": "Data set present?",
        },
        "Data set present?": {
            "Type": "Choice",
            "Choices": [{"Condition": "{% $count($missingSplits) > 0 %}", "Next": "No data set"}],
            "Default": "List pretrained weights",
        },
        "No data set": {
            "Type": "Fail",
            "Error": "MissingDataSet",
            "Cause": (
                "{% 's3://' & $config.bucket & '/' & $config.datasetPrefix & ' lacks ' & "
                "$join($missingSplits, ', ') & ': upload the dogImages data set first "
                "(dogbreeds upload-data), with train/, valid/ and test/ folders.' %}"
            ),
        },
        "List pretrained weights": {
            "Type": "Task",
            "Resource": S3_LIST_OBJECTS,
            "Comment": "The pretrained channel is used when it holds this backbone's weights file.",
            "Arguments": {
                "Bucket": "{% $config.bucket %}",
                "Prefix": "{% $config.pretrainedPrefix & $run.hyperparameters.backbone %}",
            },
            "Assign": {
                "channels": (
                    "{% $states.result.KeyCount > 0 ? [$config.channel, $config.pretrainedChannel] "
                    ": [$config.channel] %}"
                )
            },
            "Retry": _sdk_retry(),
            "Next": "Tune?",
        },
    }


def _tuning_states(s: Settings, r: PipelineResources) -> dict:
    """Optional hyperparameter tuning: its best trial's values override the defaults of the final job."""
    vpc_config = {"SecurityGroupIds": r.security_group_ids, "Subnets": r.subnet_ids}
    return {
        "Tune?": {
            "Type": "Choice",
            "Choices": [
                {"Condition": "{% $run.tune and $run.sharedFeatures %}", "Next": FEATURE_EXTRACTION_STATE},
                {"Condition": "{% $run.tune %}", "Next": "Tune hyperparameters"},
            ],
            "Default": "Train",
        },
        FEATURE_EXTRACTION_STATE: _feature_extraction_state(s, r, vpc_config),
        "Tune hyperparameters": {
            "Type": "Task",
            "Resource": TUNING_JOB_SYNC,
            "Arguments": {
                "HyperParameterTuningJobName": _job_name("hpo"),
                "HyperParameterTuningJobConfig": {
                    "Strategy": "Bayesian",
                    "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": r.tuning_objective},
                    "ResourceLimits": {
                        "MaxNumberOfTrainingJobs": s.tuning_max_jobs,
                        "MaxParallelTrainingJobs": s.tuning_max_parallel_jobs,
                    },
                    "ParameterRanges": {
                        "ContinuousParameterRanges": [
                            {
                                "Name": "learning_rate",
                                "MinValue": str(s.tuning_learning_rate_min),
                                "MaxValue": str(s.tuning_learning_rate_max),
                                "ScalingType": "Logarithmic",
                            }
                        ],
                        "CategoricalParameterRanges": [
                            {"Name": "batch_size", "Values": [str(b) for b in s.tuning_batch_sizes]}
                        ],
                        "IntegerParameterRanges": [],
                    },
                    "TrainingJobEarlyStoppingType": "Auto",
                },
                "TrainingJobDefinition": {
                    "StaticHyperParameters": "{% $run.tuningHyperParameters %}",
                    "AlgorithmSpecification": {
                        "TrainingImage": r.tuning_image,
                        "TrainingInputMode": "File",
                        "MetricDefinitions": r.metric_definitions,
                    },
                    "RoleArn": r.role_arn,
                    "InputDataConfig": "{% $channels %}",
                    **_trial_resources(s, r),
                    "VpcConfig": vpc_config,
                },
                "Tags": [{"Key": "project", "Value": s.project_name}],
            },
            "Assign": {
                "tuned": "{% $states.result.BestTrainingJob.TunedHyperParameters %}",
                "tuningJob": "{% $states.result.HyperParameterTuningJobName %}",
            },
            "Retry": _job_retry(),
            "Catch": _job_catch(),
            "Next": "Train",
        },
    }


def _trial_resources(s: Settings, r: PipelineResources) -> dict:
    """Where a tuning trial (or the feature extraction, on the trials' instance type) writes, and what it runs on."""
    return {
        "OutputDataConfig": {
            "S3OutputPath": f"s3://{r.bucket_name}/{r.models_prefix}tuning/",
            "KmsKeyId": r.key_arn,
        },
        "ResourceConfig": _resource_config(
            instance_type=_js(s.tuning_instance_type),
            instance_count="1",
            volume_gb=s.training_volume_size_gb,
            key_arn=r.key_arn,
        ),
        "StoppingCondition": {"MaxRuntimeInSeconds": s.training_max_runtime_seconds},
    }


def _feature_extraction_state(s: Settings, r: PipelineResources, vpc_config: dict) -> dict:
    """Head-only tuning: a training job that stores the backbone's train and valid features for every trial."""
    # Why a step of its own before the tuning job, rather than a first trial that writes while the others wait:
    # the tuner starts its trials together (up to MaxParallelTrainingJobs) and gives them no order and no way to
    # wait, so waiting trials would pay for idle GPUs, and a failed or early-stopped first trial would leave the
    # others to time out or extract anyway; the step also keeps the tuning job's channels and hyperparameters
    # static. It computes the key from its channels as every trial does (train.py --extract-features) and does
    # nothing where a former run stored the same features.
    return {
        "Type": "Task",
        "Resource": TRAINING_JOB_SYNC,
        "Comment": "The backbone's train and valid features, stored once in the feature store for every trial.",
        "Arguments": {
            "TrainingJobName": _job_name("features"),
            # The trials' image and instance type: the same autocast dtype, so the same key.
            "AlgorithmSpecification": {"TrainingImage": r.tuning_image, "TrainingInputMode": "File"},
            "HyperParameters": "{% $merge([$run.tuningHyperParameters, {'extract_features': 'true'}]) %}",
            "RoleArn": r.role_arn,
            "InputDataConfig": "{% $channels %}",
            **_trial_resources(s, r),
            "VpcConfig": vpc_config,
            "Tags": [{"Key": "project", "Value": s.project_name}],
        },
        "Retry": _job_retry(),
        "Catch": _job_catch(),
        "Next": "Tune hyperparameters",
    }


def _training_states(s: Settings, r: PipelineResources) -> dict:
    """The final training job on N instances (torchrun on every host), and what a failed job ends in."""
    return {
        "Train": {
            "Type": "Task",
            "Resource": TRAINING_JOB_SYNC,
            "Arguments": {
                "TrainingJobName": _job_name("train"),
                "AlgorithmSpecification": {
                    "TrainingImage": r.training_image,
                    "TrainingInputMode": "File",
                    "MetricDefinitions": r.metric_definitions,
                    "EnableSageMakerMetricsTimeSeries": True,
                },
                "HyperParameters": "{% $merge([$run.trainingHyperParameters, $tuned]) %}",
                "RoleArn": r.role_arn,
                "InputDataConfig": "{% $channels %}",
                "OutputDataConfig": {
                    "S3OutputPath": f"s3://{r.bucket_name}/{r.models_prefix}",
                    "KmsKeyId": r.key_arn,
                },
                "ResourceConfig": _resource_config(
                    instance_type="$run.instanceType",
                    instance_count="$run.instanceCount",
                    volume_gb=s.training_volume_size_gb,
                    key_arn=r.key_arn,
                ),
                "StoppingCondition": (
                    "{% $run.useSpot ? "
                    f"{{'MaxRuntimeInSeconds': {s.training_max_runtime_seconds}, "
                    f"'MaxWaitTimeInSeconds': {s.training_max_wait_seconds}}} : "
                    f"{{'MaxRuntimeInSeconds': {s.training_max_runtime_seconds}}} %}}"
                ),
                "EnableManagedSpotTraining": "{% $run.useSpot %}",
                # One checkpoint folder per run: a retried or redriven job resumes where the last one stopped.
                "CheckpointConfig": {
                    "S3Uri": "{% 's3://' & $config.bucket & '/' & $config.checkpointsPrefix & $run.runId & '/' %}",
                    "LocalPath": CHECKPOINT_LOCAL_PATH,
                },
                "VpcConfig": {"SecurityGroupIds": r.security_group_ids, "Subnets": r.subnet_ids},
                "Tags": [{"Key": "project", "Value": s.project_name}],
            },
            "Assign": {
                "trainingJob": "{% $states.result.TrainingJobName %}",
                "modelDataUrl": "{% $states.result.ModelArtifacts.S3ModelArtifacts %}",
                # [...] keeps $merge defined when the job reported no final metric.
                "metrics": "{% $merge([$states.result.FinalMetricDataList.{MetricName: Value}]) %}",
            },
            "Retry": _job_retry(),
            "Catch": _job_catch(),
            "Next": "Quality gate",
        },
        "Job failed": {
            "Type": "Fail",
            "Comment": "A tuning or training job failed or was stopped, or SageMaker refused to start it.",
            # Error names beginning with "States." are reserved: the original one goes into the cause.
            "Error": "JobFailed",
            # A failed .sync job's cause is the job's description (JSON); a refused request's is a message.
            "Cause": (
                "{% ( $d := $contains($failure.Cause, /^\\s*\\{/) ? $parse($failure.Cause) : {}; "
                "$name := $exists($d.TrainingJobName) ? $d.TrainingJobName : $d.HyperParameterTuningJobName; "
                "$status := $exists($d.TrainingJobStatus) ? $d.TrainingJobStatus : $d.HyperParameterTuningJobStatus; "
                "$exists($d.FailureReason) and $exists($name) "
                "? 'SageMaker job ' & $name & ' ended ' & $status & ': ' & $d.FailureReason "
                ": $failure.Error & ': ' & $failure.Cause ) %}"
            ),
        },
    }


def _quality_gate_states(r: PipelineResources) -> dict:
    """The verdict on the final model. Every model is registered; the verdict sets its approval status."""
    metric = _js(r.quality_gate_metric)
    verdict = (
        f"{{% ( $value := $lookup($metrics, {metric}); "
        "$verdict := $exists($value) ? ($value < $config.qualityGate ? 'below' : 'passed') : 'missing'; "
        "$threshold := $string($config.qualityGate); "
        "{ 'verdict': $verdict, "
        "'status': $verdict = 'passed' ? $config.approvalStatus : 'Rejected', "
        "'description': $verdict = 'passed' "
        f"? 'Passed the quality gate: {r.quality_gate_metric} ' & $string($value) & ' reaches ' & $threshold & "
        "' (training job ' & $trainingJob & ').' "
        ": 'Rejected by the quality gate (' & ($verdict = 'below' "
        f"? '{r.quality_gate_metric} ' & $string($value) & ' is below ' & $threshold "
        f": 'no {r.quality_gate_metric} metric') & ', training job ' & $trainingJob & "
        "'): registered for the record, never to be served.' } ) %}"
    )
    return {
        "Quality gate": {
            "Type": "Pass",
            "Comment": "Every model is registered, with its metrics; only one that passed can be approved.",
            "Assign": {
                "gate": verdict,
                "metricsKey": f"{{% $config.modelsPrefix & $trainingJob & '/{MODEL_QUALITY_FILE}' %}}",
            },
            "Next": "Record model metrics",
        },
        "Passed quality gate?": {
            "Type": "Choice",
            "Choices": [
                {"Condition": "{% $gate.verdict = 'missing' %}", "Next": "No test metric"},
                {"Condition": "{% $gate.verdict = 'below' %}", "Next": "Below quality gate"},
            ],
            "Default": "Done",
        },
        "No test metric": {
            "Type": "Fail",
            "Error": "QualityGateFailed",
            "Cause": (
                f"{{% 'Training job ' & $trainingJob & ' reported no {r.quality_gate_metric} metric, so the "
                "quality gate cannot pass; its log shows why the test evaluation did not run. The model is "
                "registered as ' & $packageArn & ' (Rejected).' %}"
            ),
        },
        "Below quality gate": {
            "Type": "Fail",
            "Error": "QualityGateFailed",
            "Cause": (
                f"{{% '{r.quality_gate_metric} ' & $string($lookup($metrics, {metric})) & "
                "' is below the quality gate ' & $string($config.qualityGate) & "
                "' (setting quality_gate_min_test_accuracy); the model is registered as ' & $packageArn & "
                "', Rejected, and will not be served.' %}"
            ),
        },
    }


def _registry_states(s: Settings, r: PipelineResources) -> dict:
    """The model's metrics in S3 (KMS-encrypted), then the model as a version of the model package group."""
    hyperparameters = "$merge([$run.hyperparameters, $tuned])"
    statistics = (
        f"{{% ( $value := $lookup($metrics, {_js(r.quality_gate_metric)}); $string({{"
        "'multiclass_classification_metrics': $exists($value) ? {'accuracy': {'value': $value}} : {}, "
        "'metrics': $metrics, "
        f"'quality_gate': {{'metric': {_js(r.quality_gate_metric)}, 'threshold': $config.qualityGate, "
        "'verdict': $gate.verdict}, "
        "'training_job': $trainingJob, 'tuning_job': $tuningJob, 'model_data_url': $modelDataUrl, "
        f"'hyperparameters': {hyperparameters}}}) ) %}}"
    )
    # SageMaker's limits: at most 50 entries, values of 1 to 256 characters from a small alphabet (no quotes):
    # hyperparameters are shown unencoded, as train.py reads them.
    metadata = (
        "{% ( $show := function($v) { $exists($v) ? $string($v) : 'none' }; "
        "$merge($append([{ "
        "'training_job': $trainingJob, "
        "'tuning_job': $tuningJob ? $tuningJob : 'none', "
        "'dataset': $config.datasetUri, "
        "'code': $config.codeUri, "
        f"{_js(r.quality_gate_metric)}: $show($lookup($metrics, {_js(r.quality_gate_metric)})), "
        f"{_js(r.tuning_objective)}: $show($lookup($metrics, {_js(r.tuning_objective)})) "
        f"}}], $each({hyperparameters}, function($v, $k) {{ {{'hp.' & $k: $string($v)}} }}))) ) %}}"
    )
    container = {
        "Image": r.inference_image,
        "ModelDataUrl": "{% $modelDataUrl %}",
        "Environment": r.model_environment,
        "Framework": "PYTORCH",
        "FrameworkVersion": s.inference_framework_version,
    }
    return {
        "Record model metrics": {
            "Type": "Task",
            "Resource": S3_PUT_OBJECT,
            "Comment": "The model package's model-quality statistics, encrypted with the stack key.",
            "Arguments": {
                "Bucket": "{% $config.bucket %}",
                "Key": "{% $metricsKey %}",
                "Body": statistics,
                "ContentType": "application/json",
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": r.key_arn,
            },
            "Retry": _sdk_retry(),
            "Catch": _registration_catch(),
            "Next": "Register model",
        },
        "Register model": {
            "Type": "Task",
            "Resource": CREATE_MODEL_PACKAGE,
            "Comment": "A new version of the model package group; approval (EventBridge) decides what is served.",
            "Arguments": {
                "ModelPackageGroupName": r.model_package_group,
                "ModelPackageDescription": "{% $gate.description %}",
                "ModelApprovalStatus": "{% $gate.status %}",
                "InferenceSpecification": {
                    "Containers": [container],
                    "SupportedContentTypes": list(SERVING_CONTENT_TYPES),
                    "SupportedResponseMIMETypes": list(SERVING_RESPONSE_TYPES),
                    "SupportedRealtimeInferenceInstanceTypes": r.inference_instance_types,
                },
                "ModelMetrics": {
                    "ModelQuality": {
                        "Statistics": {
                            "ContentType": "application/json",
                            "S3Uri": "{% 's3://' & $config.bucket & '/' & $metricsKey %}",
                        }
                    }
                },
                "CustomerMetadataProperties": metadata,
                "MetadataProperties": {"GeneratedBy": "{% $states.context.Execution.Id %}"},
                # One token per execution and job: a retried or redriven request registers no second version.
                "ClientToken": (
                    "{% $substring($hash($states.context.Execution.Id & '/' & $trainingJob, 'SHA-256'), 0, "
                    f"{CLIENT_TOKEN_LENGTH}) %}}"
                ),
                "Tags": [{"Key": "project", "Value": s.project_name}],
            },
            "Assign": {"packageArn": "{% $states.result.ModelPackageArn %}"},
            "Retry": _sdk_retry(),
            "Catch": _registration_catch(),
            "Next": "Passed quality gate?",
        },
        "Registration failed": {
            "Type": "Fail",
            "Comment": "Writing the metrics or registering the model failed after retries.",
            "Error": "RegistrationFailed",
            "Cause": (
                "{% 'The model ' & $modelDataUrl & ' of training job ' & $trainingJob & ' (quality gate: ' & "
                "$gate.verdict & ') could not be registered in the model registry: ' & $failure.Error & ': ' & "
                "$failure.Cause %}"
            ),
        },
        "Done": {
            "Type": "Succeed",
            "Output": (
                "{% {'model_package_arn': $packageArn, 'approval_status': $gate.status, "
                "'model_data_url': $modelDataUrl, 'training_job': $trainingJob, "
                "'tuning_job': $tuningJob, 'metrics': $metrics} %}"
            ),
        },
    }


def _registration_catch() -> list[dict]:
    return [
        {
            "ErrorEquals": ["States.ALL"],
            "Assign": {"failure": "{% $states.errorOutput %}"},
            "Next": "Registration failed",
        }
    ]


def _job_name(kind: str) -> str:
    """``<prefix>-<kind>-<run>-<attempt>``: the attempt part is new on every retry and every redrive
    (the state is entered again), so a job name never collides with one SageMaker already has."""
    return (
        "{% $config.jobNamePrefix & '-" + kind + "-' & $run.runId & '-' & "
        "$substring($hash($states.context.State.EnteredTime & '/' & $string($states.context.State.RetryCount), "
        f"'SHA-256'), 0, {ATTEMPT_ID_LENGTH}) %}}"
    )


def _job_retry() -> list[dict]:
    """SageMaker refusing to start a job: a full quota (another job holds the instances) is waited out;
    throttling and other service errors get a few quick retries. A job that ran and failed is not retried."""
    return [
        {
            "ErrorEquals": ["SageMaker.ResourceLimitExceededException"],
            "IntervalSeconds": 300,
            "MaxAttempts": 6,
            "BackoffRate": 1.5,
            "MaxDelaySeconds": 1800,
            "JitterStrategy": "FULL",
        },
        {
            "ErrorEquals": ["SageMaker.AmazonSageMakerException", "ThrottlingException"],
            "IntervalSeconds": 10,
            "MaxAttempts": 3,
            "BackoffRate": 2.0,
            "JitterStrategy": "FULL",
        },
    ]


def _job_catch() -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "Assign": {"failure": "{% $states.errorOutput %}"}, "Next": "Job failed"}]


def _resource_config(*, instance_type: str, instance_count: str, volume_gb: int, key_arn: str) -> str:
    """ResourceConfig with VolumeKmsKeyId only where the type has no NVMe storage (decided at run time)."""
    return (
        f"{{% ( $type := {instance_type}; $base := {{'InstanceType': $type, 'InstanceCount': {instance_count}, "
        f"'VolumeSizeInGB': {volume_gb}}}; "
        f"$contains($type, /{LOCAL_STORAGE_PATTERN}/) ? $base "
        f": $merge([$base, {{'VolumeKmsKeyId': {_js(key_arn)}}}]) ) %}}"
    )


def _sdk_retry() -> list[dict]:
    return [
        {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": 2,
            "MaxAttempts": 3,
            "BackoffRate": 2.0,
            "JitterStrategy": "FULL",
        }
    ]


def _input_problems_expression() -> str:
    """A JSONata expression giving one sentence per problem with the execution input (empty if none)."""
    epochs = _check(TRAIN.HYPERPARAMETERS["epochs"], "$in", "epochs")
    hyperparameters = "\n    ".join(
        _check(TRAIN.HYPERPARAMETERS[name], "$hp", f"hyperparameters.{name}") for name in HYPERPARAMETERS
    )
    return f"""(
  $in := $states.input;
  $fields := {_js(list(INPUT_FIELDS))};
  $hpFields := {_js(list(HYPERPARAMETERS))};
  $isInt := function($v, $lo, $hi) {{ $type($v) = 'number' ? ($v = $floor($v) and $v >= $lo and $v <= $hi) : false }};
  $isOneOf := function($v, $allowed) {{ $type($v) = 'string' ? $v in $allowed : false }};
  $has := function($o, $k) {{ $type($o) = 'object' ? $k in $keys($o) : false }};
  $hp := $has($in, 'hyperparameters') and $type($in.hyperparameters) = 'object' ? $in.hyperparameters : {{}};
  $tune := $has($in, 'tune') and $type($in.tune) = 'boolean' ? $in.tune : $config.defaults.tune;
  $unknown := $filter($keys($in), function($k) {{ $not($k in $fields) }});
  $unknownHp := $filter($keys($hp), function($k) {{ $not($k in $hpFields) }});
  $type($in) != 'object' ? ['The input must be a JSON object, for example {{"tune": false, "epochs": 5}}.'] : [
    $count($unknown) > 0
      ? 'Unknown field(s) ' & $join($unknown, ', ') & '; accepted: ' & $join($fields, ', ') & '.' : undefined,
    $has($in, 'tune') and $type($in.tune) != 'boolean' ? 'tune must be true or false.' : undefined,
    $has($in, 'instance_count') and $not($isInt($in.instance_count, 1, {MAX_INSTANCE_COUNT}))
      ? 'instance_count must be a whole number from 1 to {MAX_INSTANCE_COUNT}.' : undefined,
    $has($in, 'instance_type') and $not($isOneOf($in.instance_type, {_js(list(training_instance_types()))}))
      ? 'instance_type must be a SageMaker training instance type such as ml.g4dn.xlarge (one of the '
        & '{len(training_instance_types())} in the SageMaker API the stack was built with).' : undefined,
    {epochs}
    $has($in, 'use_spot') and $type($in.use_spot) != 'boolean' ? 'use_spot must be true or false.' : undefined,
    $has($in, 'hyperparameters') and $type($in.hyperparameters) != 'object'
      ? 'hyperparameters must be an object, for example {{"backbone": "resnet34"}}.' : undefined,
    $count($unknownHp) > 0
      ? 'Unknown hyperparameter(s) ' & $join($unknownHp, ', ') & '; accepted: ' & $join($hpFields, ', ') & '.'
      : undefined,
    {hyperparameters}
    $tune and ($has($hp, 'learning_rate') or $has($hp, 'batch_size'))
      ? 'learning_rate and batch_size are chosen by tuning when tune is true; set "tune": false to fix them.'
      : undefined
  ]
)"""


def _check(hyperparameter, source: str, label: str) -> str:
    """One line of the input checks: the JSONata test of what train.py accepts for ``hyperparameter``."""
    kind, name = hyperparameter.kind, hyperparameter.name
    value = f"{source}.{name}"
    if isinstance(kind, TRAIN.WholeNumber):
        valid = f"$isInt({value}, {kind.low}, {kind.high})"
    elif isinstance(kind, TRAIN.OpenInterval):
        valid = f"($type({value}) = 'number' ? ({value} > {_js(kind.low)} and {value} < {_js(kind.high)}) : false)"
    elif isinstance(kind, TRAIN.OneOf):
        valid = f"$isOneOf({value}, {_js(list(kind.values))})"
    elif isinstance(kind, TRAIN.TrueFalse):
        valid = f"$type({value}) = 'boolean'"
    elif isinstance(kind, TRAIN.TrueFalseAuto):
        valid = f"($type({value}) = 'boolean' or {value} = 'auto')"
    else:  # pragma: no cover - a new kind in training/hyperparameters.py needs its test here
        raise TypeError(f"no JSONata check for {kind!r}")
    message = f"{label} must be {kind.accepted}.".replace("\\", "\\\\").replace("'", "\\'")
    return f"$has({source}, '{name}') and $not({valid})\n      ? '{message}' : undefined,"


def _run_expression() -> str:
    """The run's effective values, and the run's ID (from the execution's) for job and checkpoint names.

    Hyperparameter values are JSON-encoded as the SageMaker SDK sends them (strings quoted; the
    input checks allow no quote or backslash in them: every string value comes from a fixed list).
    """
    return f"""(
  $in := $states.input;
  $d := $config.defaults;
  $pick := function($k) {{ $k in $keys($in) ? $lookup($in, $k) : $lookup($d, $k) }};
  $encode := function($o) {{ $merge($each($o, function($v, $k) {{
    {{ $k: $type($v) = 'string' ? '"' & $v & '"' : $string($v) }}
  }})) }};
  $tune := $pick('tune');
  $given := 'hyperparameters' in $keys($in) ? $in.hyperparameters : {{}};
  $all := $merge([$d.hyperparameters, {{'epochs': $pick('epochs')}}, $given]);
  $hp := $tune ? $sift($all, function($v, $k) {{ $not($k in {_js(list(TRAIN.TUNED))}) }}) : $all;
  $runId := $substring($hash($states.context.Execution.Id, 'SHA-256'), 0, {RUN_ID_LENGTH});
  $shared := $lookup($hp, 'trainable') = 'head' and $not($lookup($hp, 'augment') = true);
  $store := $shared ? {{'feature_store': '"' & $config.featureStore & '"'}} : {{}};
  {{
    'tune': $tune,
    'instanceCount': $pick('instance_count'),
    'instanceType': $pick('instance_type'),
    'useSpot': $pick('use_spot'),
    'hyperparameters': $hp,
    'trainingHyperParameters': $merge([$config.sagemakerParameters,
      {{'sagemaker_torch_distributed_enabled': 'true'}}, $encode($hp), $store]),
    'tuningHyperParameters': $merge([$config.sagemakerParameters,
      $encode($merge([$hp, {{'epochs': $config.tuningEpochs, 'quantize': 'none'}}])), $store]),
    'sharedFeatures': $shared,
    'runId': $runId
  }}
)"""
