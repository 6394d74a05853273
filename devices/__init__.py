"""Device profiles: compute targets and microphone arrays, as YAML files."""
