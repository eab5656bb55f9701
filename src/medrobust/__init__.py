"""medrobust: adversarial robustness of medical-imaging AI."""
