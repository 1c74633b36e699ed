"""Entry points a user runs or submits to a Ray cluster (`python -m jobs.<name>`), with their YAML configs."""
