"""The Kubernetes backend: every task a Job on a cluster (docs/protocol.md).

One idea per module:

- :mod:`~ozw.backends.kubernetes.names`: Job names, labels, hashes, annotations.
- :mod:`~ozw.backends.kubernetes.monitor`: following one Job to its end.
- :mod:`~ozw.backends.kubernetes.preflight`: permissions and the preflight Job.
- :mod:`~ozw.backends.kubernetes.template`: ``pod_template`` checked against the model.
- :mod:`~ozw.backends.kubernetes.manifests`: the task Job, its Secret, the preflight Job.
- :mod:`~ozw.backends.kubernetes.classify`: pod / Job status → failure reason.
- :mod:`~ozw.backends.kubernetes.client`: the API calls (lightkube), bounded, anyio only.
- :mod:`~ozw.backends.kubernetes.backend`: :class:`KubernetesBackend` and its task runs.

Names, template, manifests and classify are pure; the rest do I/O. The
``[backend.kubernetes]`` table is :class:`ozw.config.KubernetesConfig`.
"""
