"""The failures the CLI expects, each with an exit code and one clear message (never a traceback)."""

from __future__ import annotations

from botocore import exceptions as bx

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed: a failed execution, an error answer, a bad download
EXIT_USAGE = 2  # a wrong option, argument or -c setting
EXIT_AWS = 3  # no region, no usable credentials, access denied, AWS unreachable
EXIT_NOT_DEPLOYED = 4  # a stack the command needs is not deployed (or not usable, or lacks an output)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = """exit codes:
  0    success
  1    the operation failed (failed execution, error answer, bad download, data check)
  2    usage: a wrong option, argument or -c setting
  3    AWS set-up: no region, no usable credentials, access denied, AWS unreachable
  4    a stack the command needs is not deployed (the message names it)
  130  interrupted (Ctrl-C)"""

CREDENTIALS_HINT = (
    "configure them (`aws configure`, or `aws sso login --profile NAME`), then pass --profile NAME or set "
    "AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)
REGION_HINT = "pass --region REGION, set AWS_REGION, or set a region in the profile"

# Error codes AWS answers when the credentials themselves are wrong or expired.
CREDENTIAL_ERROR_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "AuthFailure",
        "RequestExpired",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "Forbidden"}
)
# botocore's own exceptions that all mean "no usable credentials".
_CREDENTIAL_EXCEPTIONS = tuple(
    getattr(bx, name)
    for name in (
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "SSOError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "TokenRetrievalError",
        "RefreshWithMFAUnsupportedError",
    )
    if hasattr(bx, name)
)
_NETWORK_EXCEPTIONS = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)


class OpsError(Exception):
    """An expected failure: the CLI prints ``error: <message>`` and exits with ``exit_code``."""

    exit_code = EXIT_FAILED


class UsageError(OpsError):
    exit_code = EXIT_USAGE


class AwsSetupError(OpsError):
    exit_code = EXIT_AWS


class NotDeployedError(OpsError):
    exit_code = EXIT_NOT_DEPLOYED


def client_error_code(err: Exception) -> str:
    return err.response.get("Error", {}).get("Code", "") if isinstance(err, bx.ClientError) else ""


def from_botocore(err: Exception) -> OpsError | None:
    """The OpsError an AWS SDK exception means to the operator, or None when it is not one of them."""
    if isinstance(err, _CREDENTIAL_EXCEPTIONS):
        return AwsSetupError(f"No usable AWS credentials ({err}): {CREDENTIALS_HINT}.")
    if isinstance(err, bx.NoRegionError):
        return AwsSetupError(f"No AWS region is configured: {REGION_HINT}.")
    if isinstance(err, bx.ProfileNotFound):
        return AwsSetupError(f"{err}: pass an existing --profile (profiles live in ~/.aws/config).")
    if isinstance(err, _NETWORK_EXCEPTIONS):
        return AwsSetupError(f"AWS could not be reached ({err}): check the network and the region.")
    if isinstance(err, bx.ClientError):
        code = client_error_code(err)
        message = err.response.get("Error", {}).get("Message", "")
        operation = getattr(err, "operation_name", "the call")
        if code in CREDENTIAL_ERROR_CODES:
            return AwsSetupError(f"AWS rejected the credentials ({code}: {message}): {CREDENTIALS_HINT}.")
        if code in ACCESS_DENIED_CODES:
            return AwsSetupError(
                f"Access denied to {operation} ({message}): the credentials in use need this permission."
            )
        return OpsError(f"AWS {operation} failed: {code}: {message}")
    if isinstance(err, bx.BotoCoreError):
        return OpsError(f"AWS SDK error: {err}")
    return None
