"""The training pipeline's Amazon States Language definition (JSONata), as plain data.

One ``StartExecution`` runs: check the input → check the data set and the pretrained weights in S3
→ optional hyperparameter tuning (``createHyperParameterTuningJob.sync``) → the final training job
(``createTrainingJob.sync``, N instances, torchrun on every host) → the quality gate on
``test_accuracy`` → the handoff (SSM parameters the endpoint stack reads).

The definition is built here from plain values (strings may be CDK tokens) so that the stack
synthesizes it into the template and the tests can read it back and run it.

Execution input (every field optional)::

    {"tune": true, "instance_count": 2, "instance_type": "ml.g4dn.xlarge", "epochs": 10,
     "use_spot": false, "hyperparameters": {"learning_rate": 0.01, "batch_size": 64, "backbone": "resnet50"}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from stacks.contract import HYPERPARAMETERS
from stacks.instances import LOCAL_STORAGE_PATTERN
from stacks.settings import BACKBONES, TRAINABLE, Settings

# What the execution input may carry; anything else is refused before a job starts.
INPUT_FIELDS = ("tune", "instance_count", "instance_type", "epochs", "use_spot", "hyperparameters")
TUNED = ("learning_rate", "batch_size")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MAX_INSTANCE_COUNT = 20
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"

TRAINING_JOB_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"
TUNING_JOB_SYNC = "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
S3_LIST_OBJECTS = "arn:aws:states:::aws-sdk:s3:listObjectsV2"
SSM_PUT_PARAMETER = "arn:aws:states:::aws-sdk:ssm:putParameter"


@dataclass(frozen=True)
class PipelineResources:
    """The deployed things the definition refers to (values may be CDK tokens)."""

    bucket_name: str
    dataset_prefix: str
    pretrained_prefix: str
    models_prefix: str
    checkpoints_prefix: str
    role_arn: str
    training_image: str
    tuning_image: str
    code_uri: str
    region: str
    key_arn: str
    subnet_ids: list[str]
    security_group_ids: list[str]
    job_name_prefix: str
    model_parameter: str
    metrics_parameter: str
    metric_definitions: list[dict[str, str]]
    tuning_objective: str
    quality_gate_metric: str


def job_name_prefix(settings: Settings) -> str:
    """At most 12 characters, so '<prefix>-hpo-<12 hex>' fits the tuning job name limit of 32."""
    return settings.project_name[:12].rstrip("-")


def _js(value: object) -> str:
    """A value as a JSONata literal (JSON is valid JSONata)."""
    return json.dumps(value)


def _sdk_encoded(values: dict[str, object]) -> dict[str, str]:
    """Hyperparameter values JSON-encoded, as the SageMaker Python SDK sends them."""
    return {k: json.dumps(v) for k, v in values.items()}


def definition(settings: Settings, r: PipelineResources) -> dict:
    s = settings
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
    channel = {
        "ChannelName": "training",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{r.bucket_name}/{r.dataset_prefix}",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }
    pretrained_channel = {
        "ChannelName": "pretrained",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://{r.bucket_name}/{r.pretrained_prefix}",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }
    vpc_config = {"SecurityGroupIds": r.security_group_ids, "Subnets": r.subnet_ids}
    config = {
        "bucket": r.bucket_name,
        "datasetPrefix": r.dataset_prefix,
        "pretrainedPrefix": r.pretrained_prefix,
        "defaults": defaults,
        "jobNamePrefix": r.job_name_prefix,
        "sagemakerParameters": sagemaker_parameters,
        "tuningEpochs": s.tuning_epochs,
        "channel": channel,
        "pretrainedChannel": pretrained_channel,
        "qualityGate": s.quality_gate_min_test_accuracy,
    }

    return {
        "Comment": "Dog-breed classifier: tune (optional), train with DDP, gate on test accuracy, hand off",
        "QueryLanguage": "JSONata",
        "StartAt": "Configure",
        "States": {
            "Configure": {
                "Type": "Pass",
                "Comment": "Deploy-time constants, then the input checks.",
                # Every variable a later state reads is assigned here first, so none is ever undefined.
                "Assign": {"config": config, "tuned": {}, "tuningJob": None},
                "Next": "Check input",
            },
            "Check input": {
                "Type": "Pass",
                "Assign": {"problems": "{% " + _input_problems_expression() + " %}"},
                "Next": "Input valid?",
            },
            "Input valid?": {
                "Type": "Choice",
                "Conditions": [{"Condition": "{% $count($problems) > 0 %}", "Next": "Bad input"}],
                "Default": "Resolve run",
            },
            "Bad input": {
                "Type": "Fail",
                "Error": "InvalidInput",
                "Cause": "{% 'The execution input was refused: ' & $join($problems, ' ') %}",
            },
            "Resolve run": {
                "Type": "Pass",
                "Comment": "Defaults from the settings, overridden by the input; job names from the execution.",
                "Assign": {"run": "{% " + _run_expression() + " %}"},
                "Next": "List data set",
            },
            "List data set": {
                "Type": "Task",
                "Resource": S3_LIST_OBJECTS,
                "Arguments": {
                    "Bucket": "{% $config.bucket %}",
                    "Prefix": "{% $config.datasetPrefix %}",
                    "Delimiter": "/",
                },
                "Assign": {
                    "missingSplits": (
                        "{% ( $found := $states.result.CommonPrefixes.Prefix; "
                        "$filter(['train/', 'valid/', 'test/'], function($s) "
                        "{ $not(($config.datasetPrefix & $s) in $found) }) ) %}"
                    )
                },
                "Retry": _sdk_retry(),
                "Next": "Data set present?",
            },
            "Data set present?": {
                "Type": "Choice",
                "Conditions": [{"Condition": "{% $count($missingSplits) > 0 %}", "Next": "No data set"}],
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
            "Tune?": {
                "Type": "Choice",
                "Conditions": [{"Condition": "{% $run.tune %}", "Next": "Tune hyperparameters"}],
                "Default": "Train",
            },
            "Tune hyperparameters": {
                "Type": "Task",
                "Resource": TUNING_JOB_SYNC,
                "Arguments": {
                    "HyperParameterTuningJobName": "{% $run.tuningJobName %}",
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
                        "VpcConfig": vpc_config,
                    },
                    "Tags": [{"Key": "project", "Value": s.project_name}],
                },
                "Assign": {
                    "tuned": "{% $states.result.BestTrainingJob.TunedHyperParameters %}",
                    "tuningJob": "{% $states.result.HyperParameterTuningJobName %}",
                },
                "Next": "Train",
            },
            "Train": {
                "Type": "Task",
                "Resource": TRAINING_JOB_SYNC,
                "Arguments": {
                    "TrainingJobName": "{% $run.trainingJobName %}",
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
                    "CheckpointConfig": {
                        "S3Uri": (
                            f"{{% 's3://' & $config.bucket & '/{r.checkpoints_prefix}' & $run.trainingJobName & '/' %}}"
                        ),
                        "LocalPath": CHECKPOINT_LOCAL_PATH,
                    },
                    "VpcConfig": vpc_config,
                    "Tags": [{"Key": "project", "Value": s.project_name}],
                },
                "Assign": {
                    "trainingJob": "{% $states.result.TrainingJobName %}",
                    "modelDataUrl": "{% $states.result.ModelArtifacts.S3ModelArtifacts %}",
                    "metrics": "{% $merge($states.result.FinalMetricDataList.{MetricName: Value}) %}",
                },
                "Next": "Quality gate",
            },
            "Quality gate": {
                "Type": "Choice",
                "Conditions": [
                    {
                        "Condition": f"{{% $not($exists($lookup($metrics, {_js(r.quality_gate_metric)}))) %}}",
                        "Next": "No test metric",
                    },
                    {
                        "Condition": (f"{{% $lookup($metrics, {_js(r.quality_gate_metric)}) < $config.qualityGate %}}"),
                        "Next": "Below quality gate",
                    },
                ],
                "Default": "Hand off model",
            },
            "No test metric": {
                "Type": "Fail",
                "Error": "QualityGateFailed",
                "Cause": (
                    f"{{% 'Training job ' & $trainingJob & ' reported no {r.quality_gate_metric} metric, so the "
                    "quality gate cannot pass; its log shows why the test evaluation did not run.' %}"
                ),
            },
            "Below quality gate": {
                "Type": "Fail",
                "Error": "QualityGateFailed",
                "Cause": (
                    f"{{% '{r.quality_gate_metric} ' & $string($lookup($metrics, {_js(r.quality_gate_metric)})) & "
                    "' is below the quality gate ' & $string($config.qualityGate) & "
                    "' (setting quality_gate_min_test_accuracy); the model ' & $modelDataUrl & "
                    "' was not handed to the endpoint.' %}"
                ),
            },
            "Hand off model": {
                "Type": "Task",
                "Resource": SSM_PUT_PARAMETER,
                "Comment": "The endpoint stack serves this artifact on its next deploy.",
                "Arguments": {
                    "Name": r.model_parameter,
                    "Value": "{% $modelDataUrl %}",
                    "Type": "String",
                    "Overwrite": True,
                },
                "Retry": _sdk_retry(),
                "Next": "Record metrics",
            },
            "Record metrics": {
                "Type": "Task",
                "Resource": SSM_PUT_PARAMETER,
                "Arguments": {
                    "Name": r.metrics_parameter,
                    "Value": (
                        "{% $string({'model_data_url': $modelDataUrl, 'training_job': $trainingJob, "
                        "'tuning_job': $tuningJob, 'metrics': $metrics, "
                        "'hyperparameters': $merge([$run.hyperparameters, $tuned])}) %}"
                    ),
                    "Type": "String",
                    "Overwrite": True,
                },
                "Retry": _sdk_retry(),
                "Next": "Done",
            },
            "Done": {
                "Type": "Succeed",
                "Output": (
                    "{% {'model_data_url': $modelDataUrl, 'training_job': $trainingJob, "
                    "'tuning_job': $tuningJob, 'metrics': $metrics} %}"
                ),
            },
        },
    }


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
    $has($in, 'instance_type')
      and $not($type($in.instance_type) = 'string'
        ? $contains($in.instance_type, /^ml\\.[a-z0-9]+\\.[a-z0-9]+$/) : false)
      ? 'instance_type must be a SageMaker training instance type such as ml.g4dn.xlarge.' : undefined,
    $has($in, 'epochs') and $not($isInt($in.epochs, 1, 1000))
      ? 'epochs must be a whole number from 1 to 1000.' : undefined,
    $has($in, 'use_spot') and $type($in.use_spot) != 'boolean' ? 'use_spot must be true or false.' : undefined,
    $has($in, 'hyperparameters') and $type($in.hyperparameters) != 'object'
      ? 'hyperparameters must be an object, for example {{"backbone": "resnet34"}}.' : undefined,
    $count($unknownHp) > 0
      ? 'Unknown hyperparameter(s) ' & $join($unknownHp, ', ') & '; accepted: ' & $join($hpFields, ', ') & '.'
      : undefined,
    $has($hp, 'learning_rate')
      and $not($type($hp.learning_rate) = 'number' ? ($hp.learning_rate > 0 and $hp.learning_rate < 1) : false)
      ? 'hyperparameters.learning_rate must be a number above 0 and below 1.' : undefined,
    $has($hp, 'batch_size') and $not($isInt($hp.batch_size, 1, 4096))
      ? 'hyperparameters.batch_size must be a whole number from 1 to 4096.' : undefined,
    $has($hp, 'backbone') and $not($isOneOf($hp.backbone, {_js(list(BACKBONES))}))
      ? 'hyperparameters.backbone must be one of {", ".join(BACKBONES)}.' : undefined,
    $has($hp, 'trainable') and $not($isOneOf($hp.trainable, {_js(list(TRAINABLE))}))
      ? 'hyperparameters.trainable must be one of {", ".join(TRAINABLE)}.' : undefined,
    $has($hp, 'patience') and $not($isInt($hp.patience, 1, 1000))
      ? 'hyperparameters.patience must be a whole number from 1 to 1000.' : undefined,
    $has($hp, 'seed') and $not($isInt($hp.seed, 0, 2147483647))
      ? 'hyperparameters.seed must be a whole number from 0 to 2147483647.' : undefined,
    $has($hp, 'image_size') and $not($isInt($hp.image_size, 32, 1024))
      ? 'hyperparameters.image_size must be a whole number from 32 to 1024.' : undefined,
    $has($hp, 'amp') and $not($isOneOf($hp.amp, {_js(list(AMP_MODES))}))
      ? 'hyperparameters.amp must be one of {", ".join(AMP_MODES)}.' : undefined,
    $has($hp, 'channels_last') and $type($hp.channels_last) != 'boolean'
      ? 'hyperparameters.channels_last must be true or false.' : undefined,
    $has($hp, 'augment') and $not($type($hp.augment) = 'boolean' or $hp.augment = 'auto')
      ? 'hyperparameters.augment must be true, false or "auto".' : undefined,
    $tune and ($has($hp, 'learning_rate') or $has($hp, 'batch_size'))
      ? 'learning_rate and batch_size are chosen by tuning when tune is true; set "tune": false to fix them.'
      : undefined
  ]
)"""


def _run_expression() -> str:
    """The run's effective values; job names derive from the execution ID, so each run has its own.

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
  $hp := $tune ? $sift($all, function($v, $k) {{ $not($k in {_js(list(TUNED))}) }}) : $all;
  $jobId := $substring($hash($states.context.Execution.Id, 'SHA-256'), 0, 12);
  {{
    'tune': $tune,
    'instanceCount': $pick('instance_count'),
    'instanceType': $pick('instance_type'),
    'useSpot': $pick('use_spot'),
    'hyperparameters': $hp,
    'trainingHyperParameters': $merge([$config.sagemakerParameters,
      {{'sagemaker_torch_distributed_enabled': 'true'}}, $encode($hp)]),
    'tuningHyperParameters': $merge([$config.sagemakerParameters,
      $encode($merge([$hp, {{'epochs': $config.tuningEpochs}}]))]),
    'trainingJobName': $config.jobNamePrefix & '-train-' & $jobId,
    'tuningJobName': $config.jobNamePrefix & '-hpo-' & $jobId
  }}
)"""
