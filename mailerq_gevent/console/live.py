"""(being written)"""


def install(app, context):
    pass
