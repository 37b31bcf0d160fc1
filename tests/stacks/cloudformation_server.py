"""moto's server on loopback, with CloudFormation keeping its documented rules for SSM-typed parameters.

The pinned CDK CLI deploys to it through ``AWS_ENDPOINT_URL``, so what is tested is the CLI's own deploy logic
(skip or not, change set, "no changes", execute, outputs) against CloudFormation's behaviour. moto 5.2 departs
from CloudFormation on exactly the path a stack with an SSM-typed parameter takes; each correction below
restores what CloudFormation's documentation states, nothing more (``systems-manager-parameter-types.html``
and ``API_Parameter.html`` in the CloudFormation User Guide and API Reference):

- DescribeStacks gives an SSM-typed parameter's SSM name as its ParameterValue and the value it resolved to
  as its ResolvedValue ("returned only for Systems Manager parameter types"); moto gives the value only.
- UsePreviousValue keeps "the existing Systems Manager parameter key, not its value", and "CloudFormation
  always fetches the latest values from Parameter Store when it updates stacks"; moto reuses the old value
  (and then looks it up in SSM as if it were a name).
- A change set "uses whatever values exist in Parameter Store at the time" it is created: it has changes when
  the template or a resolved value differs, the resources that refer to a parameter whose value changed
  among them; otherwise it is FAILED, "The submitted information didn't contain changes." moto compares
  the raw inputs only, and refuses CreateChangeSet itself with "No updates are to be performed."
- An executed change set updates the stack's outputs, and the stack's other change sets are deleted; moto
  keeps the outputs the stack had when it was created empty, and every change set.
- DescribeChangeSet of a change set that is not there fails with ChangeSetNotFound (the CLI waits for that
  after deleting one), DeleteChangeSet of one succeeds; moto answers ValidationError and a server error.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

from moto.cloudformation import models, parsing, responses
from moto.cloudformation.exceptions import CloudFormationError
from moto.server import ThreadedMotoServer

SSM_TYPE = "AWS::SSM::Parameter::"
NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."


class ChangeSetNotFound(CloudFormationError):
    code = "ChangeSetNotFoundException"  # serialized with the model's code, ChangeSetNotFound, and HTTP 404


def _is_ssm(declared: dict[str, Any]) -> bool:
    return str(declared.get("Type", "")).startswith(SSM_TYPE)


def _inputs(template: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Each declared parameter's input: the value given, else the default (an SSM name for SSM-typed ones)."""
    return {key: given.get(key, declared.get("Default")) for key, declared in template.get("Parameters", {}).items()}


def _effective(resource_map: parsing.ResourceMap, template: dict[str, Any], given: dict[str, Any]) -> dict:
    """What a stack operation with these inputs would use: SSM-typed parameters read from SSM now."""
    values = _inputs(template, given)
    for key, declared in template.get("Parameters", {}).items():
        if _is_ssm(declared) and values[key]:
            values[key] = resource_map.parse_ssm_parameter(values[key], declared["Type"])
    return values


def _deployed(resource_map: parsing.ResourceMap) -> dict[str, Any]:
    """The same for the stack as it is: SSM-typed parameters as they resolved when it was last updated."""
    template = resource_map._template
    values = _inputs(template, resource_map.input_parameters)
    for key, declared in template.get("Parameters", {}).items():
        if _is_ssm(declared):
            values[key] = resource_map.resolved_parameters.get(key)
    return values


def _patches() -> list[Any]:
    original_diff = parsing.ResourceMap.build_resource_diff
    original_parameter_list = models.Stack.parameter_list.fget
    original_execute = models.CloudFormationBackend.execute_change_set
    original_describe = models.CloudFormationBackend.describe_change_set
    original_delete = models.CloudFormationBackend.delete_change_set
    original_validate = responses.CloudFormationResponse._validate_different_update

    def parameter_list(stack: models.Stack) -> list[dict[str, Any]]:
        declared = stack.resource_map._template.get("Parameters", {})
        names = _inputs(stack.resource_map._template, stack.resource_map.input_parameters)
        listed = original_parameter_list(stack)
        for entry in listed:
            if _is_ssm(declared.get(entry["ParameterKey"], {})):
                entry["ResolvedValue"] = entry["ParameterValue"]
                entry["ParameterValue"] = names[entry["ParameterKey"]]
        return listed

    def previous_inputs(stack: models.Stack) -> dict[str, Any]:
        # What UsePreviousValue refers to: the input, so the SSM name of an SSM-typed parameter.
        return _inputs(stack.resource_map._template, stack.resource_map.input_parameters)

    def has_parameters(stack: models.Stack, given: dict[str, Any]) -> bool:
        # Called once the templates are known to be equal: compare what each would resolve to.
        resource_map = stack.resource_map
        return _effective(resource_map, resource_map._template, given) == _deployed(resource_map)

    def build_resource_diff(
        resource_map: parsing.ResourceMap, template: dict[str, Any], parameters: dict[str, Any] | None = None
    ) -> dict[str, list[str]]:
        diff = original_diff(resource_map, template)  # the template's own differences
        before = _deployed(resource_map)
        after = _effective(resource_map, template, parameters or {})
        changed = {key for key, value in after.items() if key in before and before[key] != value}
        for name, resource in template["Resources"].items():
            unchanged = name in resource_map._resource_json_map and name not in diff["Modify"]
            if unchanged and changed & set(parsing.get_references_from_template(resource)):
                diff["Modify"].append(name)
        return diff

    def change_set_diff(change_set: models.ChangeSet) -> list[models.Change]:
        resource_map = change_set.stack.resource_map
        diff = resource_map.build_resource_diff(change_set.template_dict, change_set.parameters)
        types = {name: r["Type"] for name, r in resource_map._resource_json_map.items()}
        types.update({name: r["Type"] for name, r in change_set.template_dict["Resources"].items()})
        return [models.Change(action, name, types[name]) for action, names in diff.items() for name in names]

    def validate_different_update(response: responses.CloudFormationResponse, *args: Any) -> None:
        # CreateChangeSet never refuses "no changes": the change set says so in its status.
        if response._get_action() != "CreateChangeSet":
            original_validate(response, *args)

    def execute_change_set(backend: models.CloudFormationBackend, change_set_name: str, stack_name: str | None = None):
        change_set = original_describe(backend, change_set_name)
        original_execute(backend, change_set_name, stack_name)
        stack = backend.stacks[change_set.stack_id]
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        for change_set_id in [i for i, c in backend.change_sets.items() if c.stack_id == stack.stack_id]:
            del backend.change_sets[change_set_id]

    def find(backend: models.CloudFormationBackend, change_set_name: str) -> bool:
        return change_set_name in backend.change_sets or any(
            c.change_set_name == change_set_name for c in backend.change_sets.values()
        )

    def describe_change_set(backend: models.CloudFormationBackend, change_set_name: str) -> models.ChangeSet:
        if not find(backend, change_set_name):
            raise ChangeSetNotFound(f"ChangeSet [{change_set_name}] does not exist")
        return original_describe(backend, change_set_name)

    def delete_change_set(backend: models.CloudFormationBackend, change_set_name: str) -> None:
        if find(backend, change_set_name):
            original_delete(backend, change_set_name)

    return [
        mock.patch.object(models.Stack, "parameter_list", property(parameter_list)),
        mock.patch.object(models.Stack, "stack_parameters", property(previous_inputs)),
        mock.patch.object(models.Stack, "has_parameters", has_parameters),
        mock.patch.object(parsing.ResourceMap, "build_resource_diff", build_resource_diff),
        mock.patch.object(models.ChangeSet, "diff", change_set_diff),
        mock.patch.object(responses.CloudFormationResponse, "_validate_different_update", validate_different_update),
        mock.patch.object(models.CloudFormationBackend, "execute_change_set", execute_change_set),
        mock.patch.object(models.CloudFormationBackend, "describe_change_set", describe_change_set),
        mock.patch.object(models.CloudFormationBackend, "delete_change_set", delete_change_set),
    ]


@contextmanager
def cloudformation_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 (a free port) with the corrections above; yields its URL.

    The server is a thread of this process: nothing is left running after the block, and moto's state is
    reset before and after it.
    """
    with ExitStack() as stack:
        for patch in _patches():
            stack.enter_context(patch)
        werkzeug = logging.getLogger("werkzeug")
        level = werkzeug.level
        werkzeug.setLevel(logging.ERROR)  # no line per request
        stack.callback(werkzeug.setLevel, level)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        stack.callback(server.stop)
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        _reset(url)
        stack.callback(_reset, url)
        yield url


def _reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        answer.read()
