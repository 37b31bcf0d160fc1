"""The operator CLI's commands (``dogbreeds <command>``): each module holds one command and its helpers.

Every command finds the deployed resources from the stacks' outputs; expected failures are
``errors.OpsError`` subclasses, each with its exit code and one message for the operator.
"""
