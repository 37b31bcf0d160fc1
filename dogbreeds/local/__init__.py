"""Local mode: the whole pipeline on this machine, with no AWS account and no Docker."""
