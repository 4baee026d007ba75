"""The settings: one schema (schema.py) for tests and the running loop alike;
amounts and thresholds (amounts.py); the compiled plan's codec (plan.py);
YAML loading and validation (load.py: pydantic, only in the compile child
and the one-shot commands); whether root may trust a file (trust.py).

The loop imports schema, amounts, plan and trust, which are stdlib only.
"""
