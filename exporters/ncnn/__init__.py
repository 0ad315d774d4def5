"""ncnn: the runtime SR apps ship on Android, ARM boards and Vulkan GPUs."""
