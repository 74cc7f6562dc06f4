-- wrk script for W1: POST one ~200-byte progress event per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"session_id":"bench-1","workflow_type":"map","step":"analyzing","progress":45.5,'
  .. '"metadata":{"run":0,"seq":0,"session":1,"t":0,'
  .. '"details":"analyzing land cover: forests, rivers, roads"}}'
