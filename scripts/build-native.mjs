console.log("native build: later")
