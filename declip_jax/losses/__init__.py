"""DeCLIP losses: pure functions of arrays (contrastive, SimSiam, MLM, and their weighted combination)."""
