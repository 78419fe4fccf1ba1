"""Alerting: the rule set (``rules``), its YAML file (``render``) and the checks on its options."""
