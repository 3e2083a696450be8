"""The relabel/new-label queue: build it under a budget, write it (CSV, Label Studio), the round callback.

Who answers and how well is `kibble.annotation`; what the answers become is `kibble.labels`.
"""
