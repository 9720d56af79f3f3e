"""A client as a user's program would be: submit jobs, then wait on their results, in its own process.

    python tests/faults/drive_jobs.py COUNT PROMPT TIMEOUT

Prints one JSON line with the job ids once they are queued, and one with their
records (status, attempts, cost) once all finished or TIMEOUT ran out. Half the
jobs go as one submit_many (bundled messages), half one submit each.
"""

import json
import sys

from flowcloud import client

count, prompt, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
prompts = [f"#{i} {prompt}" for i in range(count)]
half = count // 2
ids = client.submit_many(prompts[:half], cache=False) + [client.submit(p, cache=False) for p in prompts[half:]]
print(json.dumps({"submitted": ids}), flush=True)
records = client.wait_all(ids, timeout=timeout)
print(json.dumps({"records": [{key: record.get(key) for key in ("job_id", "status", "attempts", "cost_usd",
                                                               "finished_at")} for record in records]}),
      flush=True)
