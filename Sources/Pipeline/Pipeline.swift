// stage runtime
