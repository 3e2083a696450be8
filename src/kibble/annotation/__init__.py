"""Annotation quality: gold questions, overlap assignments, simulated annotators and crowds, agreement, guideline feedback.

What kibble knows about the people who answer (docs/labels.md, "Gold questions, overlap and annotator
quality"); the queue itself is `kibble.queue`, the answers' history `kibble.labels`.
"""
