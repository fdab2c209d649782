"""Code generated from proto/cm/v1/cm.proto by scripts/gen-clients: do not edit."""
