"""The MDLM math as pure jnp functions: schedules, forward process, losses, samplers."""
