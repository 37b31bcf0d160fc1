"""Run an Amazon States Language definition (JSONata query language) with mocked task results.

Enough of Step Functions to execute the training pipeline's real definition in tests: Pass,
Choice, Task, Fail and Succeed states; ``{% ... %}`` JSONata templates anywhere in Arguments,
Output, Assign, Condition, Error and Cause; ``$states.input/result/context``; workflow variables
(Assign is evaluated with the values from before the state, then applied); and the JSONata
functions Step Functions adds ($hash, $uuid, $parse, $partition, $random). Retries and Catch are
not simulated: a mocked task that raises fails the execution.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonata

TaskHandler = Callable[[str, dict[str, Any]], Any]


def definition_from_template(template: dict, placeholders: dict[str, str] | None = None) -> dict:
    """The state machine's definition, with each CloudFormation intrinsic replaced by a readable
    placeholder (``<Ref:X>``, ``<ImportValue:X>``, ...), or by ``placeholders[placeholder]``."""
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    body = machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        _, parts = body["Fn::Join"]
        body = "".join(p if isinstance(p, str) else _placeholder(p, placeholders or {}) for p in parts)
    return json.loads(body)


def _placeholder(intrinsic: dict, overrides: dict[str, str]) -> str:
    (kind, value), *_ = intrinsic.items()
    if kind == "Ref":
        name = f"<Ref:{value}>"
    elif kind == "Fn::ImportValue":
        name = f"<ImportValue:{value}>"
    elif kind == "Fn::GetAtt":
        name = f"<GetAtt:{'.'.join(value)}>"
    elif kind == "Fn::GetStackOutput":
        name = f"<StackOutput:{value['OutputName']}>"
    elif kind == "Fn::FindInMap":
        name = f"<FindInMap:{value[0]}>"
    else:
        name = f"<{kind}>"
    return overrides.get(name, name)


class TaskFailedError(Exception):
    """Raise from a task handler to fail the task as the service would."""

    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


@dataclass
class Execution:
    status: str
    output: Any = None
    error: str | None = None
    cause: str | None = None
    path: list[str] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)

    def call(self, state: str) -> dict[str, Any]:
        """The arguments of the (only) call made by ``state``."""
        found = [args for name, _, args in self.calls if name == state]
        assert len(found) == 1, f"{state} was called {len(found)} times; path: {self.path}"
        return found[0]


_TEMPLATE = re.compile(r"^\{%(.*)%\}$", re.DOTALL)


class Interpreter:
    def __init__(self, definition: dict, tasks: TaskHandler, *, execution_id: str = "arn:exec:test-1"):
        if definition.get("QueryLanguage") != "JSONata":
            raise ValueError("only the JSONata query language is simulated")
        self.definition = definition
        self.tasks = tasks
        self.context = {"Execution": {"Id": execution_id, "Name": execution_id.rsplit(":", 1)[-1]}}

    def run(self, execution_input: Any, max_steps: int = 100) -> Execution:
        run = Execution(status="RUNNING")
        variables: dict[str, Any] = {}
        state_name = self.definition["StartAt"]
        state_input = execution_input
        for _ in range(max_steps):
            state = self.definition["States"][state_name]
            run.path.append(state_name)
            kind = state["Type"]
            env = {"input": state_input, "context": {**self.context, "State": {"Name": state_name}}}
            if kind == "Fail":
                run.status = "FAILED"
                run.error = self._eval(state.get("Error"), env, variables)
                run.cause = self._eval(state.get("Cause"), env, variables)
                run.variables = variables
                return run
            if kind == "Succeed":
                run.status = "SUCCEEDED"
                run.output = self._eval(state["Output"], env, variables) if "Output" in state else state_input
                run.variables = variables
                return run
            if kind == "Choice":
                next_state = state.get("Default")
                for rule in state["Conditions"]:
                    if self._eval(rule["Condition"], env, variables) is True:
                        next_state = rule["Next"]
                        break
                if next_state is None:
                    raise AssertionError(f"{state_name}: no condition matched and no Default")
                state_name = next_state
                continue
            if kind == "Task":
                arguments = self._eval(state.get("Arguments", {}), env, variables)
                run.calls.append((state_name, state["Resource"], arguments))
                try:
                    result = self.tasks(state["Resource"], arguments)
                except TaskFailedError as err:
                    run.status, run.error, run.cause = "FAILED", err.error, err.cause
                    run.variables = variables
                    return run
                env = {**env, "result": result}
                output = self._eval(state["Output"], env, variables) if "Output" in state else result
            elif kind == "Pass":
                output = self._eval(state["Output"], env, variables) if "Output" in state else state_input
            else:
                raise ValueError(f"state type {kind} is not simulated")
            assigned = self._eval(state.get("Assign", {}), env, variables)
            variables = {**variables, **assigned}
            if state.get("End"):
                run.status, run.output, run.variables = "SUCCEEDED", output, variables
                return run
            state_name, state_input = state["Next"], output
        raise AssertionError(f"no end after {max_steps} steps: {run.path}")

    def _eval(self, value: Any, env: dict[str, Any], variables: dict[str, Any]) -> Any:
        if isinstance(value, str):
            match = _TEMPLATE.match(value)
            if not match:
                return value
            expression = jsonata.Jsonata(match.group(1))
            _register_step_functions_functions(expression)
            return expression.evaluate(None, {**variables, "states": env})
        if isinstance(value, dict):
            return {k: self._eval(v, env, variables) for k, v in value.items()}
        if isinstance(value, list):
            return [self._eval(v, env, variables) for v in value]
        return value


def _register_step_functions_functions(expression: jsonata.Jsonata) -> None:
    def hash_(value: str, algorithm: str = "SHA-256") -> str:
        name = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
        return hashlib.new(name[algorithm], value.encode()).hexdigest()

    expression.register_lambda("hash", hash_)
    expression.register_lambda("uuid", lambda: str(uuid.uuid4()))
    expression.register_lambda("parse", json.loads)
    expression.register_lambda(
        "partition", lambda items, size: [items[i : i + size] for i in range(0, len(items), size)]
    )
    expression.register_lambda("random", lambda *seed: random.random())
