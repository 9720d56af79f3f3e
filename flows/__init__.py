"""The Langflow side of flowcloud: components (``flows/components/flowcloud``) and example flows.

Nothing in flowcloud imports this package; Langflow loads the components from
``LANGFLOW_COMPONENTS_PATH=flows/components`` and ``flowcloud.flows.build`` regenerates the flows.
"""
