"""The batch service (README "Batches")."""
