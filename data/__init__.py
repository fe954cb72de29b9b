"""Prompt sources, trace parsing, verifiers, filters, dedupe, decontamination, bundled sets.

Every curation rule is a plain function over a pandas batch that returns one reject reason per
row (None where the row passes), so it runs in our curate stage, in Ray Data `map_batches`, or
on a user's own DataFrame.
"""
