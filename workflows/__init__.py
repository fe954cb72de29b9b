"""The workflows that compose the stages, and the recipes (YAML) users run."""
