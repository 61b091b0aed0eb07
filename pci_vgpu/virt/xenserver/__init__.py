"""XenServer / XCP-ng support: the only package that imports ``XenAPI``.

``driver.XenServerDriver`` is the stevedore plugin ``xenserver``;
``simulator`` is the local XAPI simulator the tests and the demo use.
"""
