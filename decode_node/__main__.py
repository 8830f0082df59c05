from decode_node.handler import DecodeHandler
from splitmind.node.main import run

if __name__ == "__main__":
    run(DecodeHandler)
