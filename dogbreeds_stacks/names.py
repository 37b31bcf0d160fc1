"""The names of the deployed resources, written once: stacks, CLI, local demo and tests all read them here.

CDK-free (the operator CLI imports it). Every name follows from ``project_name`` (and the endpoint's
from ``endpoint_name``), so two projects can share an account and region.
"""

from __future__ import annotations

from dataclasses import dataclass

# The app's stacks, in the order they deploy; each is named <project>-<part>.
STACK_PARTS = ("foundation", "training", "notebook", "ec2-training", "endpoint", "invoker")
# The Lambda alias that carries the provisioned concurrency, and that every caller invokes.
LAMBDA_ALIAS = "live"
# The REST API's stage and its one resource: clients POST to
# https://<api id>.execute-api.<region>.amazonaws.com/v1/predict.
API_STAGE = "v1"
API_PATH = "predict"
# Tuning job names have at most 32 characters: '<prefix>-hpo-<run>-<attempt>' keeps the prefix to 12.
JOB_NAME_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class Names:
    project: str
    endpoint: str

    def stack(self, part: str) -> str:
        if part not in STACK_PARTS:
            raise ValueError(f"{part!r} is not one of the app's stacks: {', '.join(STACK_PARTS)}")
        return f"{self.project}-{part}"

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(self.stack(part) for part in STACK_PARTS)

    # --- foundation -------------------------------------------------------------------------------

    @property
    def key_alias(self) -> str:
        return f"alias/{self.project}"

    @property
    def artifact_bucket_export(self) -> str:
        return f"{self.project}-artifact-bucket"

    # --- training ------------------------------------------------------------------------------------

    @property
    def state_machine(self) -> str:
        return f"{self.project}-training"

    @property
    def state_machine_log_group(self) -> str:
        return f"/aws/vendedlogs/states/{self.state_machine}"

    @property
    def job_name_prefix(self) -> str:
        """The start of every training and tuning job name the pipeline makes (IAM is scoped to it)."""
        return self.project[:JOB_NAME_PREFIX_LENGTH].rstrip("-")

    @property
    def ec2_code_parameter(self) -> str:
        """The SSM parameter with the S3 URI of the code the EC2 training run uses (not in its user data)."""
        return f"/{self.project}/ec2-training/code-uri"

    @property
    def model_package_group(self) -> str:
        """The Model Registry group every trained model is registered in, approved or not."""
        return f"{self.project}-models"

    @property
    def approved_package_parameter(self) -> str:
        """The SSM parameter holding the ARN of the latest approved package: what the endpoint serves."""
        return f"/{self.project}/model/approved-package"

    @property
    def approval_recorder(self) -> str:
        """The state machine that records the latest approved package whenever an approval changes."""
        return f"{self.project}-approval-recorder"

    # --- notebook ------------------------------------------------------------------------------------

    @property
    def notebook(self) -> str:
        return f"{self.project}-notebook"

    @property
    def notebook_lifecycle(self) -> str:
        return f"{self.project}-autostop"

    # --- serving -------------------------------------------------------------------------------------

    @property
    def dashboard(self) -> str:
        return f"{self.project}-serving"

    def endpoint_alarm(self, what: str) -> str:
        return f"{self.endpoint}-{what}"

    @property
    def lambda_function(self) -> str:
        return f"{self.project}-predict"

    @property
    def lambda_log_group(self) -> str:
        return f"/aws/lambda/{self.lambda_function}"

    # --- the API in front of the Lambda ---------------------------------------------------------

    @property
    def api(self) -> str:
        """The REST API (API Gateway keys REST APIs by a generated ID; the name is for people)."""
        return f"{self.project}-api"

    @property
    def api_access_log_group(self) -> str:
        return f"/aws/apigateway/{self.api}/access"

    def api_execution_log_group(self, api_id: str) -> str:
        """The log group API Gateway writes a stage's execution logs to: its name is API Gateway's, not ours."""
        return f"API-Gateway-Execution-Logs_{api_id}/{API_STAGE}"

    @property
    def web_acl(self) -> str:
        """The optional WAF web ACL (unique per account, region and scope)."""
        return f"{self.project}-api"

    @property
    def api_usage_plan(self) -> str:
        return f"{self.project}-predict"

    @property
    def api_key(self) -> str:
        return f"{self.project}-client"

    @property
    def api_user_pool(self) -> str:
        return f"{self.project}-api-clients"

    @property
    def api_oauth_scope(self) -> str:
        """The OAuth scope a Cognito access token needs for POST /predict (resource server / scope)."""
        return f"{self.project}/{API_PATH}"
