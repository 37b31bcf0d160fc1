"""Operating the dog-breed classifier: the operator CLI, local mode, and the template review."""
