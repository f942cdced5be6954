"""The AML control-plane double: an HTTPS service the real azure-ai-ml SDK talks to through a custom cloud.

It stands in for Azure Machine Learning the way Azurite stands in for Azure Storage, and runs jobs for
real on the attached edge VM (SSH + docker). It shares no code with plugins/.
"""
