"""The Azure Functions app (Python v2 programming model): one Service Bus queue trigger, defined as a Blueprint
in the orchestrator package (orchestrator/trigger/function_blueprint.py) and registered here.

Deploying, the app settings it reads and how its outcomes map to message settlement: docs/trigger.md.
"""

import azure.functions as func

from orchestrator.trigger.function_blueprint import bp

app = func.FunctionApp()
app.register_functions(bp)
