"""An example qcore algorithm plugin: MSE-optimal weight clipping."""
