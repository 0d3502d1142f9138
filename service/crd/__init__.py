"""Da Vinci CRD: the coverage assessment of each in-scope order (assessment.py) and the
`ext-coverage-information` extension that carries it back on the order (extension.py)."""
