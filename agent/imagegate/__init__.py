"""The image gate: read an image (containerd's content store, an OCI layout directory or tarball),
stream each layer once, check it (integrity, malware, secrets, vulnerable packages, baseline of the
runtime spec) and reach a verdict under the image policy (agent/policy).

Public entry points:
  - scanner.ImageScanner: image -> ImageReport (findings, packages, cache hit, timing)
  - decide.decide: ImageReport + policy -> Verdict
  - service.GateService: the agent-side service (container table listener, pre-start evaluate)
  - (the flat `image.verdict` record is made by agent/outputs/record.py from a VerdictEvent)
"""
