"""The knowledge floor: rule data, payer directory, sources and the code vocabulary.

Read by facts, rules, CRD and render alike; imports nothing from the service but
`service.yamlfile` (the YAML reader).
"""
