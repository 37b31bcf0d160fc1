"""Every stack output says what it is: `aws cloudformation describe-stacks` and the console show the description."""

from __future__ import annotations

import pytest

from dogbreeds_stacks.names import STACK_PARTS

# The outputs the CDK adds itself for a reference from another stack: under the construct "Publish" for a weak
# reference (@aws-cdk/core:defaultCrossStackReferences), "Exports" for an exported one. Read by stacks, not people.
CROSS_STACK_REFERENCE = ("PublishOutput", "ExportsOutput")


@pytest.mark.parametrize("part", STACK_PARTS)
def test_every_output_has_a_description(assembly, part):
    outputs = {
        name: output
        for name, output in assembly.template(part).get("Outputs", {}).items()
        if not name.startswith(CROSS_STACK_REFERENCE)
    }
    assert outputs, f"the {part} stack has outputs: the CLI finds what is deployed through them"
    missing = sorted(name for name, output in outputs.items() if not output.get("Description", "").strip())
    assert not missing, f"outputs of the {part} stack without a description: {', '.join(missing)}"
    for name, output in outputs.items():
        assert len(output["Description"]) <= 1024, f"{name}: CloudFormation takes at most 1024 characters"
