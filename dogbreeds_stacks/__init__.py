"""The CDK stacks of the dog-breed classifier, their settings and shared constructs."""
