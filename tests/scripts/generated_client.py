"""Generates a Python client from a gateway's /openapi.json with openapi-python-client
(PyPI), as a Python user would, then calls `greeter.greet` through it: the answer must
parse as the method's value. Usage: generated_client.py GATEWAY_URL WORK_DIR."""

import json
import os
import subprocess
import sys
import urllib.request

base, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
with urllib.request.urlopen(base + "/openapi.json", timeout=10) as resp:
    doc = json.loads(resp.read())
with open(os.path.join(work, "openapi.json"), "w") as f:
    json.dump(doc, f)
with open(os.path.join(work, "config.json"), "w") as f:
    # No formatting hooks: nothing but the generator is needed.
    json.dump({"package_name_override": "meshrpc_client", "post_hooks": []}, f)
generator = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
run = subprocess.run(
    [generator, "generate", "--path", "openapi.json", "--config", "config.json", "--output-path", "client",
     "--overwrite"],
    cwd=work, capture_output=True, text=True)
print(run.stdout[-2000:], run.stderr[-2000:])
if run.returncode != 0:
    raise SystemExit(f"openapi-python-client failed ({run.returncode})")

sys.path.insert(0, os.path.join(work, "client"))
from meshrpc_client import Client  # noqa: E402
from meshrpc_client.api.greeter import greeter_greet  # noqa: E402
from meshrpc_client.models import GreeterGreetBody  # noqa: E402

answer = greeter_greet.sync(client=Client(base_url=base), body=GreeterGreetBody(name="Ada"))
print("greet:", type(answer).__name__, repr(getattr(answer, "data", None)), getattr(answer, "errors", None))
if type(answer).__name__ != "GreeterGreetResponse200" or answer.data != "Hello, Ada" or answer.errors != []:
    raise SystemExit("the generated client did not read greet's answer as its value")
