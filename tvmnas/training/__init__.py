"""Training machinery shared by the search, retraining and dynamic training: the resumable epoch loop."""
