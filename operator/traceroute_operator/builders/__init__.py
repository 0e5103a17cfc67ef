"""Pure builders of the objects the operator creates for a TracerouteProbe."""
