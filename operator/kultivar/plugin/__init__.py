"""`kubectl kultivar`: what Kultivar knows about a Model or a Deployment, from the terminal.

cluster (kubeconfig, context, namespace) -> fetch (objects, with next steps when missing) -> facts (pure: lineage,
comparison, rollout completion) -> render (pure: rich trees and tables) and changes (pure: the spec patches the
mutating commands make) -> commands (argparse, printing, watching, exit codes).
"""
