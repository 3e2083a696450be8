"""Label Studio round trip: push a round's queue as a project, pull its annotations into the label history."""
