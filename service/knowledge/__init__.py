"""The knowledge floor: rule data, payer directory, sources and the code vocabulary.

Read by facts, rules, CRD and render alike; imports nothing else from the service.
"""
