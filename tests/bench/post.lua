-- wrk: POST one chat completion per request (body from the BODY environment variable).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
