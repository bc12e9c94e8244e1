"""The feedback joiner: joins predictions with late outcomes by request id into labeled
examples, and keeps live quality per model version.
"""
