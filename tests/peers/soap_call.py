"""Call one Device service operation with zeep from another test host (network namespace).

argv: URL USER PASSWORD OPERATION [JSON-KWARGS]; prints the answer as JSON.
Runs under .venv/bin/python with the repository root as working directory.
"""

import json
import sys

from zeep.helpers import serialize_object

from tests.clients import device_client

url, user, password, operation = sys.argv[1:5]
kwargs = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
_, service = device_client(url, user, password)
print(json.dumps(serialize_object(getattr(service, operation)(**kwargs)), default=str))
