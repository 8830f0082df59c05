from prefill_node.handler import PrefillHandler
from splitmind.node.main import run

if __name__ == "__main__":
    run(PrefillHandler)
