"""Builds every stack of the app from one Settings object; used by app.py and by the tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from dogbreeds_stacks.ec2_training import Ec2TrainingStack
from dogbreeds_stacks.endpoint import EndpointStack
from dogbreeds_stacks.foundation import FoundationStack
from dogbreeds_stacks.instances import is_gpu
from dogbreeds_stacks.invoker import InvokerStack
from dogbreeds_stacks.notebook import NotebookStack
from dogbreeds_stacks.settings import Settings
from dogbreeds_stacks.training import TrainingStack


@dataclass(frozen=True)
class AppStacks:
    foundation: FoundationStack
    training: TrainingStack
    notebook: NotebookStack
    ec2_training: Ec2TrainingStack
    endpoint: EndpointStack
    invoker: InvokerStack


def environment(env: Mapping[str, str] = os.environ) -> Environment | None:
    """Account and region from CDK_DEPLOY_* (explicit) or CDK_DEFAULT_* (set by the CDK CLI).

    With neither, the stacks stay environment-agnostic: the region comes from the deploy.
    """
    account = env.get("CDK_DEPLOY_ACCOUNT") or env.get("CDK_DEFAULT_ACCOUNT")
    region = env.get("CDK_DEPLOY_REGION") or env.get("CDK_DEFAULT_REGION")
    if not account and not region:
        return None
    return Environment(account=account, region=region)


def build(app: App, settings: Settings, *, env: Environment | None = None) -> AppStacks:
    """Create every stack under ``app`` and register cdk-nag's AwsSolutions pack on the whole app."""
    common = {"env": env, "analytics_reporting": False, "settings": settings}
    name = settings.stack_name
    foundation = FoundationStack(
        app,
        name("foundation"),
        description="Dog-breed classifier: VPC, KMS key, artifact and access-log buckets",
        **common,
    )
    shared = {**common, "foundation": foundation.foundation}
    training = TrainingStack(
        app,
        name("training"),
        description="Dog-breed classifier: training code, execution role, training pipeline, model registry",
        **shared,
    )
    notebook = NotebookStack(
        app,
        name("notebook"),
        state_machine=training.state_machine,
        description="Dog-breed classifier: the team's notebook instance with idle auto-stop",
        **shared,
    )
    ec2_training = Ec2TrainingStack(
        app,
        name("ec2-training"),
        description="Dog-breed classifier: one training run on a Deep Learning AMI instance (deploy to start)",
        **shared,
    )
    endpoint = EndpointStack(
        app,
        name("endpoint"),
        description=f"Dog-breed classifier: {'GPU' if is_gpu(settings.endpoint_instance_type) else 'CPU'} real-time "
        "endpoint with autoscaling, alarms and dashboard",
        **shared,
    )
    # The endpoint serves the latest model package approved in the training stack's registry: training first.
    endpoint.add_stack_dependency(training, "the endpoint serves a package of the training stack's registry")
    invoker = InvokerStack(
        app,
        name("invoker"),
        endpoint_arn=endpoint.endpoint_arn,
        description="Dog-breed classifier: the least-privilege Lambda that calls the endpoint, and the REST API "
        "in front of it",
        **shared,
    )
    invoker.add_stack_dependency(endpoint, "the Lambda calls the endpoint")
    Tags.of(app).add("project", settings.project_name)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return AppStacks(
        foundation=foundation,
        training=training,
        notebook=notebook,
        ec2_training=ec2_training,
        endpoint=endpoint,
        invoker=invoker,
    )
