print("streamfirst")
