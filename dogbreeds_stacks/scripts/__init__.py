"""Scripts that run on deployed instances; the stacks embed them (lifecycle configs, user data)."""
