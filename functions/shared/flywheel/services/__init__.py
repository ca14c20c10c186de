"""Use cases: domain logic + adapters, no Lambda event shapes."""
