"""The rule owners' dashboard: its own FastAPI app on its own listener (`admin.*` settings).

Override analytics per topic, payer profile, reason and week or day, from the audit trail and the
feedback (ids, topics, codes and counts only), with the back-test runs beside the live numbers.
"""
