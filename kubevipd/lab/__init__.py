"""The lab: network namespaces and a Lease API server for the demo and the tests.

``kubevipd run`` never imports this package: a real cluster has a real kube-apiserver.
"""
