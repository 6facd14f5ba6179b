"""Built-in providers, installed as converge.providers; each registers under the
`converge.providers` entry-point group like any third-party provider."""
